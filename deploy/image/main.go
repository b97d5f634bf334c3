// Command image assembles laneIM's container image from a laneim binary
// built beforehand with CGO_ENABLED=0, without a container runtime and
// without pulling anything: one layer on an empty base, written as a
// tarball that `docker load` and `podman load` take and as an OCI image
// layout. deploy/image/build.sh builds the binary and runs it:
//
//	cd deploy && go run ./image --binary /tmp/laneim --tar out/laneim.tar --oci out/oci --tag laneim:dev
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	binary := fs.String("binary", "", "the laneim executable, built with CGO_ENABLED=0 (required)")
	arch := fs.String("arch", runtime.GOARCH, "GOARCH the binary was built for")
	caBundle := fs.String("ca-bundle", "", "PEM file of root CAs to include (e.g. /etc/ssl/certs/ca-certificates.crt); none by default")
	tag := fs.String("tag", "laneim:dev", "the image's name and tag")
	tarPath := fs.String("tar", "", "write a docker/podman load tarball here")
	ociDir := fs.String("oci", "", "write an OCI image layout into this folder")
	version := fs.String("version", "", "org.opencontainers.image.version label")
	revision := fs.String("revision", "", "org.opencontainers.image.revision label (git commit)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *binary == "" || (*tarPath == "" && *ociDir == "") {
		fs.Usage()
		return fmt.Errorf("--binary and at least one of --tar, --oci are required")
	}
	created, err := sourceDate()
	if err != nil {
		return err
	}
	labels := map[string]string{
		"org.opencontainers.image.title":       "laneim",
		"org.opencontainers.image.description": "laneIM: every role of the cluster in one static binary",
	}
	if *version != "" {
		labels["org.opencontainers.image.version"] = *version
	}
	if *revision != "" {
		labels["org.opencontainers.image.revision"] = *revision
	}
	img, err := Build(Spec{Binary: *binary, CABundle: *caBundle, Arch: *arch, Created: created, Labels: labels})
	if err != nil {
		return err
	}
	if *tarPath != "" {
		if err := WriteTar(*tarPath, *tag, img); err != nil {
			return err
		}
	}
	if *ociDir != "" {
		if err := WriteOCI(*ociDir, *tag, img); err != nil {
			return err
		}
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("image %s %s\n", *tag, digest)
	return nil
}

// sourceDate is SOURCE_DATE_EPOCH (reproducible builds' convention) or,
// without it, the Unix epoch: the same binary gives the same image.
func sourceDate() (time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", v, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}
