package config

import (
	"errors"
	"fmt"
	"strings"
)

// Resolve reads the credentials kept outside the configuration file: for
// every enabled upstream, password_file through readFile (os.ReadFile in
// main) and password_env through env (os.LookupEnv in main), with trailing
// newlines removed, as secret files usually end in one. Afterwards
// ResolvedPassword returns the password to use. Disabled upstreams are
// skipped, so their secrets need not exist on this host.
//
// Call it after Validate. Every problem is reported, joined, as a
// *FieldError naming the upstream's field; an unreadable file wraps the
// read error (e.g. fs.ErrNotExist).
func (c *Config) Resolve(readFile func(string) ([]byte, error), env func(string) (string, bool)) error {
	var errs []error
	if c.AdminTokenFile != "" {
		if readFile == nil {
			errs = append(errs, invalid("admin_token_file", "cannot be read: no file reader"))
		} else if b, err := readFile(c.AdminTokenFile); err != nil {
			errs = append(errs, &FieldError{Field: "admin_token_file", Err: fmt.Errorf("read %s: %w", c.AdminTokenFile, err)})
		} else if tok := trimNewlines(string(b)); tok == "" {
			errs = append(errs, invalid("admin_token_file", "%s is empty", c.AdminTokenFile))
		} else {
			c.resolvedAdminToken = tok
		}
	}
	errs = append(errs, c.resolveTokens(readFile)...)
	for _, name := range c.EnabledUpstreams() {
		u := c.Upstreams[name]
		pw, err := u.readPassword(readFile, env)
		if err != nil {
			errs = append(errs, err.withUpstream(name))
			continue
		}
		u.resolvedPassword, u.resolved = pw, true
	}
	return errors.Join(errs...)
}

// pwError is a password source problem before the upstream's name is known.
type pwError struct {
	field string
	err   error
}

func (e *pwError) withUpstream(name string) *FieldError {
	return &FieldError{Field: upstreamField(name, e.field), Err: e.err}
}

func (u *Upstream) readPassword(readFile func(string) ([]byte, error), env func(string) (string, bool)) (string, *pwError) {
	switch {
	case u.PasswordFile != "":
		if readFile == nil {
			return "", &pwError{"password_file", &problem{msg: "cannot be read: no file reader"}}
		}
		b, err := readFile(u.PasswordFile)
		if err != nil {
			// An I/O failure, not a mistake in the configuration: keep
			// the cause's identity (fs.ErrNotExist, fs.ErrPermission).
			return "", &pwError{"password_file", fmt.Errorf("read %s: %w", u.PasswordFile, err)}
		}
		pw := trimNewlines(string(b))
		if pw == "" {
			return "", &pwError{"password_file", &problem{msg: fmt.Sprintf("%s is empty", u.PasswordFile)}}
		}
		return pw, nil
	case u.PasswordEnv != "":
		var (
			v  string
			ok bool
		)
		if env != nil {
			v, ok = env(u.PasswordEnv)
		}
		if !ok {
			return "", &pwError{"password_env", &problem{msg: fmt.Sprintf("environment variable %s is not set", u.PasswordEnv)}}
		}
		pw := trimNewlines(v)
		if pw == "" {
			return "", &pwError{"password_env", &problem{msg: fmt.Sprintf("environment variable %s is empty", u.PasswordEnv)}}
		}
		return pw, nil
	}
	return u.Password, nil
}

// trimNewlines removes the line endings a secret file or `echo` leaves at
// the end; other whitespace may be part of the password and is kept.
func trimNewlines(s string) string {
	return strings.TrimRight(s, "\r\n")
}
