package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// maxHtpasswdBytes bounds the htpasswd file (about 100 000 users).
const maxHtpasswdBytes = 8 << 20

// userSet is one parsed htpasswd file.
type userSet struct {
	// users maps a user name to its bcrypt hash.
	users map[string][]byte
	// dummy is a hash of the file (the first user's) that a login for an
	// unknown user is compared against, costing what a real one costs.
	dummy []byte
	// gen counts loads; cached verifications are valid for one gen only.
	gen uint64
}

// htpasswdEntry is one user line.
type htpasswdEntry struct {
	user string
	hash string
	line int
}

// parseHtpasswd parses an htpasswd file: lines "user:hash", blank lines
// and lines starting with '#' ignored, CRLF tolerated. Only bcrypt hashes
// ($2a$, $2b$, $2y$, as `htpasswd -B` writes) are accepted: the others
// Apache supports (apr1 MD5, {SHA}, crypt, plain text) are too cheap to
// brute-force. Errors wrap ErrHtpasswd and name file and line, never the
// line's text, which might be a plain-text password.
func parseHtpasswd(data []byte, file string) ([]htpasswdEntry, error) {
	var entries []htpasswdEntry
	seen := make(map[string]int)
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		trimmed := bytes.TrimSpace(line)
		if len(trimmed) == 0 || trimmed[0] == '#' {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: %s:%d: %s", ErrHtpasswd, file, lineNo, fmt.Sprintf(format, args...))
		}
		user, hash, ok := bytes.Cut(line, []byte{':'})
		switch {
		case !ok:
			return nil, bad("not a \"user:hash\" line")
		case len(user) == 0:
			return nil, bad("empty user name")
		case bytes.ContainsFunc(user, func(r rune) bool { return r <= ' ' || r == 0x7f }):
			return nil, bad("user name contains a space or control character")
		}
		if err := checkBcryptHash(hash); err != nil {
			return nil, bad("%v", err)
		}
		if first, dup := seen[string(user)]; dup {
			return nil, bad("user %q is also defined on line %d", user, first)
		}
		seen[string(user)] = lineNo
		entries = append(entries, htpasswdEntry{user: string(user), hash: string(hash), line: lineNo})
	}
	return entries, nil
}

// checkBcryptHash accepts exactly the modular-crypt bcrypt form
// "$2b$cc$" + 53 characters of bcrypt's base64 (22 salt, 31 hash), with
// cost cc from 04 to 31, and says which other format it sees.
func checkBcryptHash(h []byte) error {
	s := string(h)
	switch {
	case strings.HasPrefix(s, "$apr1$"):
		return errors.New("MD5 (apr1) hash; only bcrypt is supported (create it with htpasswd -B)")
	case strings.HasPrefix(s, "{SHA}"):
		return errors.New("SHA-1 ({SHA}) hash; only bcrypt is supported (create it with htpasswd -B)")
	case strings.HasPrefix(s, "$1$"), strings.HasPrefix(s, "$5$"), strings.HasPrefix(s, "$6$"):
		return errors.New("crypt(3) hash; only bcrypt is supported (create it with htpasswd -B)")
	case !(strings.HasPrefix(s, "$2a$") || strings.HasPrefix(s, "$2b$") || strings.HasPrefix(s, "$2y$")):
		return errors.New("not a bcrypt hash (crypt or plain text?); only bcrypt is supported (create it with htpasswd -B)")
	case len(s) != 60 || s[6] != '$':
		return errors.New("malformed bcrypt hash")
	}
	cost := s[4:6]
	if cost[0] < '0' || cost[0] > '3' || cost[1] < '0' || cost[1] > '9' || cost < "04" || cost > "31" {
		return errors.New("bcrypt hash with an invalid cost")
	}
	for i := 7; i < len(s); i++ {
		c := s[i]
		if !(c == '.' || c == '/' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return errors.New("malformed bcrypt hash")
		}
	}
	return nil
}

// userFile is the htpasswd file and its last good parse, re-read on use
// when it changed.
type userFile struct {
	path    string
	log     *slog.Logger
	onLoad  func() // called after a successful reload (drops cached logins)
	mu      sync.Mutex
	checked time.Time   // when the file was last stat'ed
	stat    fs.FileInfo // what the last stat saw (good parse or not)
	set     *userSet
}

// openUserFile reads path; an unreadable or unparsable file is an error.
func openUserFile(path string, log *slog.Logger, onLoad func()) (*userFile, error) {
	fi, set, err := loadHtpasswd(path, 1)
	if err != nil {
		return nil, err
	}
	return &userFile{path: path, log: log, onLoad: onLoad, stat: fi, set: set}, nil
}

// current returns the users, first re-reading the file if it is time to
// look and it changed. A nil receiver has no users.
func (f *userFile) current(now time.Time) *userSet {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.checked.IsZero() && now.Sub(f.checked) < reloadInterval && now.Sub(f.checked) >= 0 {
		return f.set
	}
	f.checked = now
	fi, err := os.Stat(f.path)
	if err != nil {
		if f.stat != nil {
			f.log.Warn("htpasswd file unreadable; keeping the previous users", "file", f.path, "err", err)
			f.stat = nil
		}
		return f.set
	}
	if f.stat != nil && sameVersion(f.stat, fi) {
		return f.set
	}
	// Remember what was seen even if it does not parse, so that a broken
	// file is reported once, not every second.
	f.stat = fi
	nfi, set, err := loadHtpasswd(f.path, f.set.gen+1)
	if err != nil {
		f.log.Warn("htpasswd file changed but cannot be used; keeping the previous users", "err", err)
		return f.set
	}
	f.stat = nfi
	f.set = set
	if f.onLoad != nil {
		f.onLoad()
	}
	f.log.Info("htpasswd file reloaded", "file", f.path, "users", len(set.users))
	return f.set
}

// sameVersion reports whether two stats are of the same file version:
// same file (a rename replaces it), size and modification time.
func sameVersion(a, b fs.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// loadHtpasswd reads and parses path, returning the stat of the file it
// read.
func loadHtpasswd(path string, gen uint64) (fs.FileInfo, *userSet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrHtpasswd, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrHtpasswd, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%w: %s is not a regular file", ErrHtpasswd, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxHtpasswdBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: read %s: %w", ErrHtpasswd, path, err)
	}
	if len(data) > maxHtpasswdBytes {
		return nil, nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrHtpasswd, path, maxHtpasswdBytes)
	}
	entries, err := parseHtpasswd(data, path)
	if err != nil {
		return nil, nil, err
	}
	set := &userSet{users: make(map[string][]byte, len(entries)), gen: gen}
	for _, e := range entries {
		set.users[e.user] = []byte(e.hash)
	}
	if len(entries) > 0 {
		set.dummy = []byte(entries[0].hash)
	}
	return fi, set, nil
}
