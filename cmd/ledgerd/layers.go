package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// The flags that are not settings: they name the file and the output of
// `ledgerd config`, so they are neither keys of the file nor (but for
// LEDGER_CONFIG) variables.
const (
	configFlag = "config"
	outputFlag = "o"
)

// environment is the process environment that run reads: the process's
// own in main, a map in tests.
type environment interface {
	// Getenv returns the variable's value, "" when it is not set.
	Getenv(name string) string
	// Names returns the names of the variables that are set.
	Names() []string
}

// processEnvironment is the process's environment.
type processEnvironment struct{}

func (processEnvironment) Getenv(name string) string { return os.Getenv(name) }

func (processEnvironment) Names() []string {
	var names []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		names = append(names, name)
	}
	return names
}

// source is where a setting's value came from; each overrides the ones
// before it.
type source int

const (
	fromDefault source = iota
	fromFile
	fromEnvironment
	fromFlag
)

func (s source) String() string {
	return [...]string{"default", "file", "env", "flag"}[s]
}

// setting is one key of the effective configuration.
type setting struct {
	Key    string
	Value  string // as the flag prints it
	Source source
	// Origin names the source: the file's path, the variable, or the flag.
	Origin string
	kind   valueKind
}

// layers records the configuration's sources: the file, and where each
// setting's value came from.
type layers struct {
	// File is the configuration file (--config or LEDGER_CONFIG); empty
	// without one.
	File string
	// fileDigest is the file's content's, to tell when it changes.
	fileDigest [sha256.Size]byte
	// Settings are every setting of the command, by key.
	Settings []setting
}

// setting returns the setting of key, and whether there is one.
func (l *layers) setting(key string) (setting, bool) {
	i := slices.IndexFunc(l.Settings, func(s setting) bool { return s.Key == key })
	if i < 0 {
		return setting{}, false
	}
	return l.Settings[i], true
}

// parseLayers sets fs's flags from their layers, each over the one
// before: the defaults, the configuration file (--config, or
// LEDGER_CONFIG), the LEDGER_ variables, the command line. Every layer's
// values are checked by the flag's own parsing, so that a file, a
// variable and a flag can never disagree on what a value means, even when
// a later layer overrides it. A key of the file or a LEDGER_ variable that
// names no setting of any command is an error (see toolingVariable for the
// exceptions), as is a value its flag refuses: both name the key, and the
// closest valid key or the rule.
func parseLayers(fs *flag.FlagSet, args []string, env environment) (*layers, error) {
	kinds := map[string]valueKind{}
	fs.VisitAll(func(f *flag.Flag) {
		kinds[f.Name] = kindOf(f.Value)
		f.Value = ruled(f.Value, kinds[f.Name])
	})
	// The command line is parsed first to find --config and to fail fast on
	// a bad flag, and again last, so that it wins.
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := checkEnvironment(env); err != nil {
		return nil, err
	}
	l := &layers{}
	origins := map[string]setting{}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	l.File = fs.Lookup(configFlag).Value.String()
	if !onCommandLine[configFlag] {
		l.File = env.Getenv(envName(configFlag))
	}
	if l.File != "" {
		entries, digest, err := readConfigFile(l.File)
		if err != nil {
			return nil, err
		}
		l.fileDigest = digest
		for _, e := range entries {
			if fs.Lookup(e.key) == nil || e.key == configFlag || e.key == outputFlag {
				if settingKeys()[e.key] {
					continue // another command's (serve's, in a file that migrate reads)
				}
				return nil, fmt.Errorf("unknown key %q in %s (line %d): did you mean %q?", e.key, l.File, e.line, closest(e.key, keysOf(settingKeys())))
			}
			if err := fs.Set(e.key, e.value); err != nil {
				return nil, fmt.Errorf("invalid value %q for key %q in %s (line %d): %w", e.value, e.key, l.File, e.line, err)
			}
			origins[e.key] = setting{Source: fromFile, Origin: l.File}
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		value := env.Getenv(name)
		if err != nil || value == "" || f.Name == configFlag || f.Name == outputFlag {
			return
		}
		if setErr := fs.Set(f.Name, value); setErr != nil {
			err = fmt.Errorf("invalid value %q for %s: %w", value, name, setErr)
		}
		origins[f.Name] = setting{Source: fromEnvironment, Origin: name}
	})
	if err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == configFlag || f.Name == outputFlag {
			return
		}
		s := origins[f.Name]
		if onCommandLine[f.Name] {
			s = setting{Source: fromFlag, Origin: "--" + f.Name}
		}
		s.Key, s.Value, s.kind = f.Name, f.Value.String(), kinds[f.Name]
		l.Settings = append(l.Settings, s)
	})
	return l, nil
}

// flagMention finds the flags that an error names.
var flagMention = regexp.MustCompile(`--([a-z0-9]+(?:-[a-z0-9]+)*)`)

// explain adds to a configuration error where the values of the flags it
// names came from, when that is the file or the environment: "--x must
// be ..." alone would send the reader to a command line that does not
// set it.
func (l *layers) explain(err error) error {
	var origins []string
	seen := map[string]bool{}
	for _, m := range flagMention.FindAllStringSubmatch(err.Error(), -1) {
		s, ok := l.setting(m[1])
		if !ok || seen[s.Key] {
			continue
		}
		seen[s.Key] = true
		switch s.Source {
		case fromFile:
			origins = append(origins, fmt.Sprintf("%s %q is set in %s", s.Key, redact(s.Key, s.Value), s.Origin))
		case fromEnvironment:
			origins = append(origins, fmt.Sprintf("%s %q is set by %s", s.Key, redact(s.Key, s.Value), s.Origin))
		case fromDefault, fromFlag: // the message names the flag already
		}
	}
	if len(origins) == 0 {
		return err
	}
	return fmt.Errorf("%w (%s)", err, strings.Join(origins, "; "))
}

// fileEntry is one key of the configuration file.
type fileEntry struct {
	key, value string
	line       int
}

// listKeys are the settings whose flag takes a comma-separated list: the
// file may give them a YAML list instead.
var listKeys = map[string]bool{"trusted-proxies": true, "tls-client-issuer-spki": true}

// readConfigFile reads the configuration file: one YAML mapping of
// settings to scalar values, in the flags' own syntax (durations as Go
// durations: "30s"). An empty file sets nothing.
func readConfigFile(path string) ([]fileEntry, [sha256.Size]byte, error) {
	var digest [sha256.Size]byte
	content, err := os.ReadFile(path)
	if err != nil {
		return nil, digest, fmt.Errorf("configuration file: %w", err)
	}
	digest = sha256.Sum256(content)
	decoder := yaml.NewDecoder(bytes.NewReader(content))
	var doc yaml.Node
	if err := decoder.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, digest, nil
		}
		return nil, digest, fmt.Errorf("%s is not valid YAML: %w", path, err)
	}
	var second yaml.Node
	if err := decoder.Decode(&second); !errors.Is(err, io.EOF) {
		return nil, digest, fmt.Errorf("%s holds more than one YAML document; it must hold one mapping of keys to values", path)
	}
	if len(doc.Content) == 0 {
		return nil, digest, nil // comments only
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, digest, fmt.Errorf("%s (line %d) must be a mapping of keys to values, such as listen-addr: 127.0.0.1:7070", path, root.Line)
	}
	var entries []fileEntry
	lines := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		keyNode, valueNode := root.Content[i], root.Content[i+1]
		key := keyNode.Value
		if keyNode.Kind != yaml.ScalarNode {
			return nil, digest, fmt.Errorf("%s (line %d): a key must be a setting's name, such as listen-addr", path, keyNode.Line)
		}
		if first, ok := lines[key]; ok {
			return nil, digest, fmt.Errorf("key %q appears twice in %s (lines %d and %d)", key, path, first, keyNode.Line)
		}
		lines[key] = keyNode.Line
		if valueNode.Kind == yaml.AliasNode {
			valueNode = valueNode.Alias
		}
		var value string
		switch {
		case valueNode.Kind == yaml.ScalarNode && valueNode.Tag == "!!null":
			return nil, digest, fmt.Errorf("key %q in %s (line %d) has no value: give one, or remove the key for the default", key, path, keyNode.Line)
		case valueNode.Kind == yaml.ScalarNode:
			value = valueNode.Value
		case valueNode.Kind == yaml.SequenceNode && listKeys[key]:
			var items []string
			for _, item := range valueNode.Content {
				if item.Kind != yaml.ScalarNode {
					return nil, digest, fmt.Errorf("key %q in %s (line %d): the list's items must be single values", key, path, item.Line)
				}
				items = append(items, item.Value)
			}
			value = strings.Join(items, ",")
		default:
			return nil, digest, fmt.Errorf("key %q in %s (line %d) must have a single value, not a list or a mapping", key, path, keyNode.Line)
		}
		entries = append(entries, fileEntry{key: key, value: value, line: keyNode.Line})
	}
	return entries, digest, nil
}

// settingKeys are the keys of every command's settings: a file or an
// environment shared by serve and migrate (a Helm chart's migration Job)
// may hold keys that only one of them reads.
var settingKeys = sync.OnceValue(func() map[string]bool {
	keys := map[string]bool{}
	for _, command := range []string{"serve", "migrate", "bootstrap"} {
		fs := flag.NewFlagSet(command, flag.ContinueOnError)
		defineFlags(fs, command, newFlagValues())
		fs.VisitAll(func(f *flag.Flag) { keys[f.Name] = true })
	}
	delete(keys, configFlag)
	delete(keys, outputFlag)
	return keys
})

func keysOf(set map[string]bool) []string {
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// toolingVariable reports whether a LEDGER_ variable belongs to the
// repository's development tooling (scripts/test.sh, scripts/pg.sh, the
// test suites), which shares the environment of the ledgerd processes
// that tests and `make run` start: LEDGER_TEST_* and LEDGER_PG_*, and two
// older names. ledgerd reads none of them, and no flag may be named so.
func toolingVariable(name string) bool {
	return strings.HasPrefix(name, "LEDGER_TEST_") || strings.HasPrefix(name, "LEDGER_PG_") ||
		name == "LEDGER_FUZZTIME" || name == "LEDGER_NO_COALESCE_ARGS"
}

// checkEnvironment refuses a set LEDGER_ variable that names no setting of
// any command (nor LEDGER_CONFIG, nor the tooling's): a misspelt variable
// would otherwise be ignored, and its setting silently left at its
// default. An empty variable counts as unset, here as everywhere.
func checkEnvironment(env environment) error {
	known := map[string]bool{envName(configFlag): true}
	for key := range settingKeys() {
		known[envName(key)] = true
	}
	var errs []error
	names := env.Names()
	sort.Strings(names)
	for _, name := range names {
		if !strings.HasPrefix(name, "LEDGER_") || known[name] || toolingVariable(name) || env.Getenv(name) == "" {
			continue
		}
		errs = append(errs, fmt.Errorf("unknown variable %s in the environment: did you mean %s?", name, closest(name, keysOf(known))))
	}
	return errors.Join(errs...)
}

// closest returns the candidate nearest to name by edit distance, the
// first in order among equals.
func closest(name string, candidates []string) string {
	best, bestDistance := "", -1
	for _, c := range candidates {
		if d := editDistance(name, c); bestDistance < 0 || d < bestDistance {
			best, bestDistance = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	previous := make([]int, len(b)+1)
	current := make([]int, len(b)+1)
	for j := range previous {
		previous[j] = j
	}
	for i := 1; i <= len(a); i++ {
		current[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			current[j] = min(previous[j]+1, current[j-1]+1, previous[j-1]+cost)
		}
		previous, current = current, previous
	}
	return previous[len(b)]
}

// valueKind is the type of a flag's value, which says what a valid value
// looks like.
type valueKind int

const (
	kindString valueKind = iota
	kindBool
	kindInt
	kindFloat
	kindDuration
	kindLevel
)

func kindOf(v flag.Value) valueKind {
	getter, ok := v.(flag.Getter)
	if !ok {
		return kindString
	}
	switch getter.Get().(type) {
	case bool:
		return kindBool
	case int, int64, uint, uint64:
		return kindInt
	case float64:
		return kindFloat
	case time.Duration:
		return kindDuration
	case *slog.Level:
		return kindLevel
	}
	return kindString
}

// rule says what a valid value of the kind looks like; empty for strings,
// whose flags explain their own refusals.
func (k valueKind) rule() string {
	return [...]string{
		kindString:   "",
		kindBool:     "true or false",
		kindInt:      "a whole number",
		kindFloat:    "a number, such as 2000 or 0.5",
		kindDuration: "a Go duration such as 500ms, 30s, 5m or 1h30m (0 needs no unit)",
		kindLevel:    "debug, info, warn or error",
	}[k]
}

// ruledValue is a flag's value whose refusals say the rule instead of the
// flag package's "parse error", on the command line as in the file and the
// environment.
type ruledValue struct {
	flag.Value
	kind valueKind
}

func ruled(v flag.Value, kind valueKind) flag.Value {
	if kind == kindBool {
		return ruledBool{ruledValue{v, kind}}
	}
	return ruledValue{v, kind}
}

func (v ruledValue) Set(s string) error {
	err := v.Value.Set(s)
	if err != nil && v.kind.rule() != "" {
		return fmt.Errorf("want %s", v.kind.rule())
	}
	return err
}

// Get is the underlying flag's, for flag.Getter.
func (v ruledValue) Get() any {
	if g, ok := v.Value.(flag.Getter); ok {
		return g.Get()
	}
	return v.String()
}

// ruledBool is a boolean flag's ruledValue: --no-coalesce alone means
// true, as with the flag package's own.
type ruledBool struct{ ruledValue }

func (ruledBool) IsBoolFlag() bool { return true }

// Secrets in printed settings and logged changes: database URLs' passwords
// (in the URL's user part, or a password or sslpassword parameter of a URL
// or keyword DSN), and any setting whose name says it is secret.
var (
	urlPassword   = regexp.MustCompile(`(://[^:/@]*:)[^/]*@`)
	paramPassword = regexp.MustCompile(`((?:^|[?&\s])(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)`)
)

const redacted = "REDACTED"

// redact returns a setting's value fit to print.
func redact(key, value string) string {
	switch {
	case strings.HasSuffix(key, "database-url"):
		value = urlPassword.ReplaceAllString(value, "${1}"+redacted+"@")
		return paramPassword.ReplaceAllString(value, "${1}"+redacted)
	case value != "" && (strings.Contains(key, "password") || strings.Contains(key, "secret") || strings.HasSuffix(key, "-token")):
		return redacted
	}
	return value
}
