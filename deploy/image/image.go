package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Entrypoint is where the binary sits in the image, and what it runs.
const Entrypoint = "/laneim"

// User is the numeric user and group the image runs as: no passwd file
// is needed, and the process is not root (the "nonroot" id of distroless).
const User = "65532:65532"

// Spec describes the image to assemble.
type Spec struct {
	// Binary is the laneim executable to put at Entrypoint. It must be
	// statically linked (CGO_ENABLED=0): the image has no libc.
	Binary string
	// CABundle, when set, is a PEM file copied to
	// /etc/ssl/certs/ca-certificates.crt, where Go looks for the system
	// roots (needed only to reach servers with public certificates).
	CABundle string
	// Arch is the GOARCH the binary was built for (amd64, arm64, ...).
	Arch string
	// Created is the image's creation time, also every file's modification
	// time; a fixed one (SOURCE_DATE_EPOCH) makes the image reproducible.
	Created time.Time
	// Labels are the config's labels (org.opencontainers.image.*).
	Labels map[string]string
}

// Build assembles the image: one layer on an empty base, with the binary,
// an optional CA bundle and a writable /tmp; nothing is pulled. The
// manifest, config and layer have OCI media types (a `docker load`
// tarball records none, so WriteTar's output loads anywhere).
func Build(s Spec) (v1.Image, error) {
	if err := checkStatic(s.Binary); err != nil {
		return nil, err
	}
	files := []file{{name: "tmp/", mode: 0o1777, dir: true}}
	bin, err := os.ReadFile(s.Binary)
	if err != nil {
		return nil, fmt.Errorf("image: read the binary: %w", err)
	}
	files = append(files, file{name: Entrypoint[1:], mode: 0o755, data: bin})
	if s.CABundle != "" {
		pem, err := os.ReadFile(s.CABundle)
		if err != nil {
			return nil, fmt.Errorf("image: read the CA bundle: %w", err)
		}
		files = append(files,
			file{name: "etc/", mode: 0o755, dir: true},
			file{name: "etc/ssl/", mode: 0o755, dir: true},
			file{name: "etc/ssl/certs/", mode: 0o755, dir: true},
			file{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: pem})
	}
	layerTar, err := tarOf(files, s.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: s.Created},
			CreatedBy: "laneim deploy/image: " + Entrypoint,
			Comment:   "static laneim binary on an empty base",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("image: append the layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS = "linux"
	cfg.Architecture = s.Arch
	cfg.Created = v1.Time{Time: s.Created}
	cfg.Config.Entrypoint = []string{Entrypoint}
	cfg.Config.User = User
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = []string{"PATH=/", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	cfg.Config.Labels = s.Labels
	// The ports every role may listen on (comet WebSocket, api gRPC,
	// admin); informational only.
	cfg.Config.ExposedPorts = map[string]struct{}{"8080/tcp": {}, "9090/tcp": {}, "9100/tcp": {}}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("image: set the config: %w", err)
	}
	return img, nil
}

// WriteTar writes img as a `docker load` / `podman load` tarball tagged tag.
func WriteTar(path, tag string, img v1.Image) error {
	ref, err := name.NewTag(tag, name.WeakValidation)
	if err != nil {
		return fmt.Errorf("image: tag %q: %w", tag, err)
	}
	if err := tarball.WriteToFile(path, ref, img); err != nil {
		return fmt.Errorf("image: write %s: %w", path, err)
	}
	return nil
}

// WriteOCI writes img into an OCI image layout at dir (created, or
// replaced when it holds one), annotated with tag's tag part as its
// reference name: `skopeo copy oci:DIR:TAG ...` and `crane push DIR ...`
// take it.
func WriteOCI(dir, tag string, img v1.Image) error {
	ref, err := name.NewTag(tag, name.WeakValidation)
	if err != nil {
		return fmt.Errorf("image: tag %q: %w", tag, err)
	}
	// Replace a previous layout, never anything else.
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
			return fmt.Errorf("image: %s exists and is not an OCI image layout; not replacing it", dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("image: clear %s: %w", dir, err)
		}
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("image: layout %s: %w", dir, err)
	}
	// The reference name is the tag alone, as skopeo (oci:DIR:TAG) and
	// buildkit write it.
	err = p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref.TagStr(),
	}))
	if err != nil {
		return fmt.Errorf("image: write %s: %w", dir, err)
	}
	return nil
}

type file struct {
	name string
	mode int64
	dir  bool
	data []byte
}

// tarOf returns a tar of files, owned by root, modified at mtime.
func tarOf(files []file, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: mtime, Format: tar.FormatPAX, Typeflag: tar.TypeReg, Size: int64(len(f.data))}
		if f.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("image: tar %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("image: tar %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image: tar: %w", err)
	}
	return buf.Bytes(), nil
}

// checkStatic refuses a binary that needs a dynamic loader (built with
// cgo): it would not start on an empty base.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("image: %s is not an ELF executable: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("image: " + path + " is dynamically linked; build it with CGO_ENABLED=0")
		}
	}
	return nil
}
