package ledger

import (
	"context"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// QuotaNamespacesPerPattern is the quota a QuotaError names when a caller
// authorized by a prefix pattern would create more namespaces than
// Config.MaxNamespacesPerPattern allows.
const QuotaNamespacesPerPattern = "max_namespaces_per_pattern"

type creatorPatternsKey struct{}

// WithCreatorPatterns returns a context whose calls create namespaces
// (CreateNamespace, or a Reserve's auto-creation) within
// Config.MaxNamespacesPerPattern for each of patterns: the prefix patterns
// ("team-a-*") of the role bindings that authorized the call. Without it
// (a platform admin, a binding that names the namespace itself, no
// authentication), creation is not bounded. Patterns that do not end in
// "*" are ignored: they name one namespace.
func WithCreatorPatterns(ctx context.Context, patterns ...string) context.Context {
	var prefixes []string
	for _, p := range patterns {
		if strings.HasSuffix(p, "*") {
			prefixes = append(prefixes, p)
		}
	}
	slices.Sort(prefixes) // one locking order, so that two creators never deadlock
	return context.WithValue(ctx, creatorPatternsKey{}, slices.Compact(prefixes))
}

// cappedPatterns returns the patterns whose namespaces a creation in ctx
// must count, or none when creation is not bounded.
func (s *Store) cappedPatterns(ctx context.Context) []string {
	if s.maxNamespacesPerPattern == 0 {
		return nil
	}
	patterns, _ := ctx.Value(creatorPatternsKey{}).([]string)
	return patterns
}

// withinPatternCap runs create in a transaction in which the namespaces of
// every pattern are counted, each pattern locked (pg_advisory_xact_lock)
// to the commit, so that creators through one pattern on any number of
// replicas are serialized and the count is exact. A namespace that exists
// already is not a creation and is not counted; one over the bound fails
// with a *QuotaError and nothing is written.
func withinPatternCap[T any](ctx context.Context, s *Store, name string, patterns []string, create func(tx pgx.Tx) (T, error)) (T, error) {
	var result T
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, pattern := range patterns {
			if _, err := tx.Exec(ctx, query("namespace_pattern_lock"), pattern); err != nil {
				return err
			}
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM namespaces WHERE name = $1)`, name).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			for _, pattern := range patterns {
				var count int64
				prefix := strings.TrimSuffix(pattern, "*")
				if err := tx.QueryRow(ctx, query("namespace_pattern_count"), prefix).Scan(&count); err != nil {
					return err
				}
				if limit := int64(s.maxNamespacesPerPattern); count >= limit {
					return &QuotaError{Namespace: name, Quota: QuotaNamespacesPerPattern, Pattern: pattern, Limit: limit, Usage: count + 1}
				}
			}
		}
		var err error
		result, err = create(tx)
		return err
	})
	return result, dbError(err)
}
