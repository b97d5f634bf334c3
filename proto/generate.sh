#!/usr/bin/env bash
# Regenerates the Go code for the .proto files beside this script.
# Needs protoc (Debian: protobuf-compiler), protoc-gen-go and protoc-gen-go-grpc on PATH:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:$(go env GOPATH)/bin"
protoc -I . \
  --go_out=. --go_opt=module=github.com/laneim/laneim/proto \
  --go-grpc_out=. --go-grpc_opt=module=github.com/laneim/laneim/proto \
  client.proto topic.proto api.proto
