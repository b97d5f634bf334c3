package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's entrypoint is checked with a command that needs no server:
// minting a token with dev mode's secret prints a JWT and exits 0.
var checkArgs = []string{"token", "--user", "image-check"}

var (
	buildOnce sync.Once
	buildDir  string
	built     string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// staticBinary builds laneim (the root module) with CGO_ENABLED=0 once per
// test binary, or returns $LANEIM_IMAGE_BINARY when set.
func staticBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("LANEIM_IMAGE_BINARY"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "laneim-image-test")
		if buildErr != nil {
			return
		}
		built = filepath.Join(buildDir, "laneim")
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", built, ".")
		cmd.Dir = filepath.Join("..", "..")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = errors.New("go build: " + err.Error() + "\n" + string(out))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

// imageTar returns a `docker load` tarball of the image: the one
// deploy/image/build.sh wrote when $LANEIM_IMAGE is set (deploy/test.sh
// sets it), else one assembled here from a fresh static build.
func imageTar(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("LANEIM_IMAGE"); p != "" {
		return p
	}
	img, err := Build(Spec{Binary: staticBinary(t), Arch: runtime.GOARCH, Created: time.Unix(0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "laneim.tar")
	if err := WriteTar(p, "laneim:test", img); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestImageEntrypointRuns unpacks the image's layers as a runtime would
// and runs its entrypoint: what works on a machine without docker or
// podman.
func TestImageEntrypointRuns(t *testing.T) {
	img, err := tarball.ImageFromPath(imageTar(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cfg.OS, cfg.Architecture, runtime.GOARCH)
	}
	if got := strings.Join(cfg.Config.Entrypoint, " "); got != Entrypoint {
		t.Fatalf("entrypoint %q, want %q", got, Entrypoint)
	}
	if cfg.Config.User != User {
		t.Errorf("user %q, want %q (not root)", cfg.Config.User, User)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Errorf("%d layers, want 1 (an empty base)", len(layers))
	}

	root := t.TempDir()
	unpack(t, img, root)
	entry := filepath.Join(root, cfg.Config.Entrypoint[0])
	if err := checkStatic(entry); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(root, "tmp")); err != nil || !fi.IsDir() {
		t.Errorf("no /tmp folder in the image: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, entry, checkArgs...)
	cmd.Dir = root
	cmd.Env = cfg.Config.Env // the image's environment only
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", entry, checkArgs, err, stderr.String())
	}
	checkToken(t, out)
}

// TestImageRunsInContainerRuntime loads the image into docker or podman
// and runs it, where one of them works.
func TestImageRunsInContainerRuntime(t *testing.T) {
	runtimeBin := ""
	for _, name := range []string{"docker", "podman"} {
		if p, err := exec.LookPath(name); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := exec.CommandContext(ctx, p, "info").Run()
			cancel()
			if err == nil {
				runtimeBin = p
				break
			}
		}
	}
	if runtimeBin == "" {
		t.Skip("no working docker or podman here; TestImageEntrypointRuns ran the unpacked image instead")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, runtimeBin, "load", "-i", imageTar(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("%s load: %v\n%s", runtimeBin, err, out)
	}
	// "Loaded image: laneim:dev" (docker), "Loaded image: localhost/laneim:dev" (podman).
	ref := ""
	for _, line := range strings.Split(string(out), "\n") {
		if _, after, ok := strings.Cut(line, "Loaded image: "); ok {
			ref = strings.TrimSpace(after)
		} else if _, after, ok := strings.Cut(line, "Loaded image(s): "); ok {
			ref = strings.TrimSpace(strings.Split(after, ",")[0])
		}
	}
	if ref == "" {
		t.Fatalf("%s load named no image:\n%s", runtimeBin, out)
	}
	run := append([]string{"run", "--rm", "--network", "none", ref}, checkArgs...)
	got, err := exec.CommandContext(ctx, runtimeBin, run...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("%s %v: %v\n%s", runtimeBin, run, err, ee.Stderr)
		}
		t.Fatal(err)
	}
	checkToken(t, got)
}

// TestBuildRefusesDynamicBinary: a cgo binary would not start on an empty
// base, so the tool refuses it.
func TestBuildRefusesDynamicBinary(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dynamic := ""
	for _, p := range []string{"/bin/sh", "/usr/bin/env", self} {
		if checkStatic(p) != nil {
			dynamic = p
			break
		}
	}
	if dynamic == "" {
		t.Skip("no dynamically linked executable found to try")
	}
	_, err = Build(Spec{Binary: dynamic, Arch: runtime.GOARCH})
	if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Fatalf("Build(%s) = %v, want a refusal naming CGO_ENABLED=0", dynamic, err)
	}
}

// TestOCILayoutAndReproducible writes the OCI layout, reads it back with
// OCI media types, and checks that the same inputs give the same digest.
func TestOCILayoutAndReproducible(t *testing.T) {
	bin := staticBinary(t)
	spec := Spec{Binary: bin, Arch: runtime.GOARCH, Created: time.Unix(1700000000, 0)}
	a, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Errorf("two builds of the same binary: %s and %s", da, db)
	}

	dir := filepath.Join(t.TempDir(), "oci")
	if err := WriteOCI(dir, "laneim:test", a); err != nil {
		t.Fatal(err)
	}
	if err := WriteOCI(dir, "laneim:test", a); err != nil {
		t.Fatalf("writing over a previous layout: %v", err)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("%d manifests in the layout, want 1", len(m.Manifests))
	}
	d := m.Manifests[0]
	if d.MediaType != types.OCIManifestSchema1 || d.Digest != da || d.Annotations["org.opencontainers.image.ref.name"] != "test" {
		t.Errorf("layout holds %+v, want an OCI manifest %s named test (laneim:test's tag)", d, da)
	}
	img, err := idx.Image(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		if mt, _ := l.MediaType(); mt != types.OCILayer {
			t.Errorf("layer media type %s, want %s", mt, types.OCILayer)
		}
	}

	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteOCI(other, "laneim:test", a); err == nil {
		t.Error("WriteOCI replaced a folder that is not an image layout")
	}
}

// unpack extracts img's filesystem under root, refusing paths that leave it.
func unpack(t *testing.T, img v1.Image, root string) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, h.Name)
		if !strings.HasPrefix(p, root+string(filepath.Separator)) {
			t.Fatalf("layer entry %q leaves the root", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o777)
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected layer entry %q of type %c", h.Name, h.Typeflag)
		}
	}
}

// checkToken checks out is one JWT (three base64url parts).
func checkToken(t *testing.T, out []byte) {
	t.Helper()
	tok := strings.TrimSpace(string(out))
	if parts := strings.Split(tok, "."); len(parts) != 3 || !strings.HasPrefix(tok, "ey") {
		t.Fatalf("entrypoint printed %q, want a JWT", tok)
	}
}
