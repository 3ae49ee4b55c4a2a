package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxFileSize bounds the config file Load reads. A real one is a few
// kilobytes; anything near this limit is the wrong file.
const maxFileSize = 1 << 20

// Load builds the configuration from Default, then the YAML file at path
// (skipped when path is ""), then the WHARF_* environment variables looked
// up with env (nil means an empty environment; pass os.LookupEnv in main).
// It does not Validate: the caller applies command-line overrides first and
// validates the result once.
//
// The file is decoded strictly: an unknown key, a value of the wrong type,
// a bad duration or a second YAML document is an error naming the file and
// line, e.g. "config.yaml: line 4: field tag_tll not found in type
// config.Config". An empty file is fine; a missing one is an error
// (matching fs.ErrNotExist). Problems in the file or the environment are
// reported all at once, as *FieldError values joined with errors.Join.
func Load(path string, env func(string) (string, bool)) (*Config, error) {
	c := Default()
	if path != "" {
		data, err := readFile(path)
		if err != nil {
			return nil, err
		}
		if err := c.decodeYAML(path, data); err != nil {
			return nil, err
		}
	}
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	if err := c.applyEnv(env); err != nil {
		return nil, err
	}
	return c, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	if len(data) > maxFileSize {
		return nil, invalid(path, "larger than %d bytes; is this the config file?", maxFileSize)
	}
	return data, nil
}

// decodeYAML applies the YAML document in data (read from the file called
// name) on top of c.
//
// Scalars and the fetch section merge by themselves: the decoder sets only
// the keys present. The upstreams map does not, because the decoder
// replaces a map entry with a freshly decoded value; so the entries are
// decoded strictly on their own first (catching unknown keys with their
// line numbers) and then an entry for an upstream c already has is decoded
// again into a copy of it, which keeps every field the entry does not set.
func (c *Config) decodeYAML(name string, data []byte) error {
	base := c.Upstreams
	c.Upstreams = nil
	defer func() {
		if c.Upstreams == nil {
			c.Upstreams = base
		}
	}()

	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) { // no document at all: an empty file
			return nil
		}
		return yamlError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return yamlError(name, err)
		}
		return invalid(name, "line %d: a second YAML document; the config file holds one", extra.Line)
	}

	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return yamlError(name, err) // not reached: the strict pass parsed the same bytes
	}
	entries := upstreamEntries(&doc)
	decoded := c.Upstreams
	c.Upstreams = make(map[string]*Upstream, len(base)+len(decoded))
	for n, u := range base {
		c.Upstreams[n] = u
	}
	for n, u := range decoded {
		prev, known := base[n]
		node := entries[n]
		switch {
		case known && prev != nil && node != nil:
			merged := prev.clone()
			if err := node.Decode(merged); err != nil {
				return yamlError(name, err)
			}
			c.Upstreams[n] = merged
		case u == nil:
			// "name:" with no settings: an empty entry for a new
			// upstream (Validate asks for its url), nothing for a
			// known one.
			if !known || prev == nil {
				c.Upstreams[n] = &Upstream{}
			}
		default:
			// A new upstream, or one that came in through a YAML merge
			// key (<<), which replaces the entry as a whole.
			c.Upstreams[n] = u
		}
	}
	return nil
}

// upstreamEntries finds the value node of each entry of the top-level
// upstreams mapping in a parsed document, by name.
func upstreamEntries(doc *yaml.Node) map[string]*yaml.Node {
	root := deref(doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = deref(root.Content[0])
	}
	ups := mappingValue(root, "upstreams")
	if ups == nil {
		return nil
	}
	entries := make(map[string]*yaml.Node)
	for i := 0; i+1 < len(ups.Content); i += 2 {
		k := ups.Content[i]
		if k.Kind == yaml.ScalarNode && k.ShortTag() != "!!merge" {
			entries[k.Value] = ups.Content[i+1]
		}
	}
	return entries
}

// mappingValue returns the value under key in mapping node m, nil if m is
// not a mapping or has no such key.
func mappingValue(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if k := m.Content[i]; k.Kind == yaml.ScalarNode && k.Value == key {
			if v := deref(m.Content[i+1]); v.Kind == yaml.MappingNode {
				return v
			}
			return nil
		}
	}
	return nil
}

// deref follows YAML aliases (*name) to the anchored node. The parser
// rejects alias cycles, and the loop is bounded anyway.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; i < 100 && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	return n
}

// yamlError turns a decoder error into one *FieldError per problem, named
// by the file. A *yaml.TypeError carries one "line N: ..." message per bad
// value; anything else is a syntax error in a single message.
func yamlError(name string, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return &FieldError{Field: name, Err: &problem{msg: oneLine(err.Error()), cause: err}}
	}
	errs := make([]error, 0, len(te.Errors))
	for _, msg := range te.Errors {
		errs = append(errs, invalid(name, "%s", oneLine(msg)))
	}
	return errors.Join(errs...)
}

// oneLine escapes line breaks, which the decoder's messages can contain
// when they quote a multi-line value or key, so that every problem stays
// one line in a log.
func oneLine(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}
