// Package imagebuild holds the tests of the repository's Dockerfile and
// .dockerignore: no Docker engine runs where the tests run, so they check
// the Dockerfile's stages and run its `go build` on a copy of the build
// context that .dockerignore leaves, then check that the binary is static.
// It has no code of its own.
package imagebuild
