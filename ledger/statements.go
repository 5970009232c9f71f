package ledger

import "fmt"

// Statement returns the SQL text of the named statement (queries/<name>.sql,
// e.g. "reserve_insert", "complete", "lookup"), exactly as the Store runs it.
// It exists for benchmarks and tools, such as cmd/ledgerbench's raw-SQL
// baseline, that must drive the very statements ledgerd issues. It fails for
// a name with no such file.
func Statement(name string) (string, error) {
	text, ok := queries[name]
	if !ok {
		return "", fmt.Errorf("ledger statement %q: no such statement", name)
	}
	return text, nil
}
