package auth

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// keySize is the HMAC-SHA256 key length (RFC 2104 §3: at least the hash
// output length).
const keySize = 32

// loadOrCreateKey reads the token key from path, creating it when it does
// not exist. The file holds the key as 64 hex digits and a newline; it
// must be a regular file that neither group nor others can read.
func loadOrCreateKey(path string) ([]byte, error) {
	key, err := readKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := createKey(path); err != nil {
		return nil, err
	}
	// Read back what is there now: when two processes create the key at
	// once, both end up with the one that won.
	return readKey(path)
}

// readKey reads and checks an existing key file.
func readKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrKeyFile, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s is readable or writable by group or others (mode %04o); run chmod 600 on it", ErrKeyFile, path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, 2*keySize+3))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrKeyFile, path, err)
	}
	data = bytes.TrimSuffix(bytes.TrimSuffix(data, []byte{'\n'}), []byte{'\r'})
	key := make([]byte, keySize)
	if len(data) != 2*keySize {
		return nil, fmt.Errorf("%w: %s does not hold %d hex digits; delete it to have a new key created (issued tokens become invalid)", ErrKeyFile, path, 2*keySize)
	}
	if _, err := hex.Decode(key, data); err != nil {
		return nil, fmt.Errorf("%w: %s does not hold %d hex digits; delete it to have a new key created (issued tokens become invalid)", ErrKeyFile, path, 2*keySize)
	}
	return key, nil
}

// createKey writes a new random key to path atomically: a temporary file
// in the same directory (mode 0600 from os.CreateTemp), fsync, then a hard
// link to path, which unlike rename never replaces a key another process
// created meanwhile; where links are unsupported, rename. The directory
// is created 0700 when missing and synced after.
func createKey(path string) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%w: create directory: %w", ErrKeyFile, err)
	}
	key := make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("%w: generate key: %w", ErrKeyFile, err)
	}
	tmp, err := os.CreateTemp(dir, ".tokenkey-*")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	defer func() {
		// The temporary name goes in every case: after a link the key is
		// also at path; after a rename or a failure it is garbage.
		if rmErr := os.Remove(tmp.Name()); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) && err == nil {
			err = fmt.Errorf("%w: remove temporary file: %w", ErrKeyFile, rmErr)
		}
	}()
	_, werr := tmp.WriteString(hex.EncodeToString(key) + "\n")
	if werr == nil {
		werr = tmp.Chmod(0o600)
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("%w: write %s: %w", ErrKeyFile, tmp.Name(), werr)
	}
	if lerr := os.Link(tmp.Name(), path); lerr != nil {
		switch {
		case errors.Is(lerr, fs.ErrExist):
			// Another process created the key first; use that one.
			return nil
		default:
			if rerr := os.Rename(tmp.Name(), path); rerr != nil {
				return fmt.Errorf("%w: install %s: %w", ErrKeyFile, path, rerr)
			}
		}
	}
	if d, derr := os.Open(dir); derr == nil {
		serr := d.Sync()
		d.Close()
		if serr != nil {
			return fmt.Errorf("%w: sync directory %s: %w", ErrKeyFile, dir, serr)
		}
	}
	return nil
}
