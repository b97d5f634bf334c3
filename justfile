# Everyday recipes. Each delegates to the same commands the README gives,
# so nothing here is needed to build, run or test laneIM.

# Run the whole cluster in one process on embedded infrastructure.
dev *ARGS:
    go run . dev {{ARGS}}

# Install what the tests need and run the whole suite (as CI does).
test *ARGS:
    bash deploy/test.sh {{ARGS}}

# Quick unit tests only (no race detector).
unit:
    go test ./topics/... ./wiring/... ./workers/... ./gateways/...

# Load test: N clients in one room, R messages/s for D.
bench members="1000" rate="200" duration="10s":
    go run . bench --members {{members}} --rate {{rate}} --duration {{duration}}

# Go benchmarks of the hot paths.
gobench:
    go test -run '^$' -bench . -benchtime 2s ./workers/... ./gateways/... ./wiring/...

# Regenerate protobuf code (needs protoc, protoc-gen-go, protoc-gen-go-grpc).
proto:
    bash proto/generate.sh

# Chat in a terminal against `just dev`.
chat user="alice" room="lobby":
    go run . chat --user {{user}} --room {{room}}
