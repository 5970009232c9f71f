package main

import (
	"fmt"

	"github.com/prometheus/prometheus/promql/parser"
)

// promql parses expressions as Prometheus does by default (no experimental
// functions), so that a rule or query that needs a feature flag fails here.
var promql = parser.NewParser(parser.Options{})

// selector is one metric selector of an expression: the metric and the
// labels it matches on, and where the expression comes from.
type selector struct {
	where  string // "rule LedgerdNotReady", "panel \"Reserve outcomes\""
	expr   string
	metric string
	labels []string
	// aggregation is the nearest aggregation around the selector ("sum",
	// "max"...), "" if none.
	aggregation string
}

// selectorsOf parses expr and returns its metric selectors.
func selectorsOf(where, expr string) ([]selector, error) {
	parsed, err := promql.ParseExpr(expr)
	if err != nil {
		return nil, fmt.Errorf("%s: %q: %w", where, expr, err)
	}
	var selectors []selector
	parser.Inspect(parsed, func(node parser.Node, path []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		s := selector{where: where, expr: expr, metric: vs.Name}
		for i := len(path) - 1; i >= 0; i-- {
			if agg, ok := path[i].(*parser.AggregateExpr); ok {
				s.aggregation = agg.Op.String()
				break
			}
		}
		for _, m := range vs.LabelMatchers {
			if m.Name != "__name__" {
				s.labels = append(s.labels, m.Name)
			}
		}
		selectors = append(selectors, s)
		return nil
	})
	if len(selectors) == 0 {
		return nil, fmt.Errorf("%s: %q selects no metric", where, expr)
	}
	return selectors, nil
}

// countExprs counts the distinct expressions the selectors come from.
func countExprs(selectors []selector) int {
	seen := map[string]bool{}
	for _, s := range selectors {
		seen[s.where+"\x00"+s.expr] = true
	}
	return len(seen)
}

// wholeDatabaseGauges are the gauges that every replica reports in full,
// each counting the whole database: added up across N replicas they would
// read N times too high, so they must be aggregated with max (or min, avg).
var wholeDatabaseGauges = map[string]bool{"ledgerd_leases_held": true, "ledgerd_leases_expired": true}

// summedTwice returns a problem for each selector of a whole-database
// gauge that is added up.
func summedTwice(selectors []selector) []string {
	var problems []string
	for _, s := range selectors {
		if wholeDatabaseGauges[s.metric] && (s.aggregation == "" || s.aggregation == "sum" || s.aggregation == "count") {
			problems = append(problems, fmt.Sprintf("%s: %q: every replica reports %s for the whole database: aggregate it with max by (namespace), not %q",
				s.where, s.expr, s.metric, s.aggregation))
		}
	}
	return problems
}
