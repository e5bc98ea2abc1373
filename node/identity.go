package node

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/crypto/pb"
)

// Identity errors. LoadIdentity wraps them with the path.
var (
	// ErrKeyPermissions: the key file is readable or writable by group or others.
	ErrKeyPermissions = errors.New("identity key file is accessible by group or others (want mode 0600)")
	// ErrKeyType: the key file holds a key that is not Ed25519.
	ErrKeyType = errors.New("identity key is not Ed25519")
)

// LoadIdentity returns the Ed25519 identity key stored at path, creating it
// on first use. A new key file is written with mode 0600 (missing parent
// directories with 0700) through a temporary file and a rename, so a crash
// never leaves a half-written key. An existing file is refused with
// ErrKeyPermissions if group or others have any access to it, and with
// ErrKeyType if it holds anything but an Ed25519 key: the key is the agent's
// identity and the author key of its envelopes, so it is never silently
// replaced.
//
// The file holds the key in libp2p's protobuf encoding
// (crypto.MarshalPrivateKey).
func LoadIdentity(path string) (crypto.PrivKey, error) {
	fi, err := os.Stat(path)
	switch {
	case err == nil:
		return readIdentity(path, fi)
	case errors.Is(err, fs.ErrNotExist):
		return createIdentity(path)
	default:
		return nil, fmt.Errorf("node: load identity %s: %w", path, err)
	}
}

func readIdentity(path string, fi fs.FileInfo) (crypto.PrivKey, error) {
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("node: load identity %s: not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("node: load identity %s (mode %04o): %w", path, fi.Mode().Perm(), ErrKeyPermissions)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("node: load identity %s: %w", path, err)
	}
	k, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("node: load identity %s: decode: %w", path, err)
	}
	if k.Type() != pb.KeyType_Ed25519 {
		return nil, fmt.Errorf("node: load identity %s (type %s): %w", path, k.Type(), ErrKeyType)
	}
	return k, nil
}

func createIdentity(path string) (crypto.PrivKey, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("node: create identity %s: %w", path, err)
	}
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("node: create identity %s: generate: %w", path, err)
	}
	b, err := crypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("node: create identity %s: encode: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, ".identity-*")
	if err != nil {
		return nil, fmt.Errorf("node: create identity %s: %w", path, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // no-op after a successful rename
	// CreateTemp already uses 0600; Chmod makes it independent of that detail.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("node: create identity %s: %w", path, err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("node: create identity %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("node: create identity %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("node: create identity %s: %w", path, err)
	}
	// Link, not Rename: if another process created the key meanwhile, keep
	// theirs and fail instead of overwriting an identity.
	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			fi, serr := os.Stat(path)
			if serr != nil {
				return nil, fmt.Errorf("node: load identity %s: %w", path, serr)
			}
			return readIdentity(path, fi)
		}
		return nil, fmt.Errorf("node: create identity %s: %w", path, err)
	}
	return k, nil
}
