package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// dashboard is the part of Grafana's dashboard JSON model that is checked.
type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Type    string   `json:"type"`
	Title   string   `json:"title"`
	Targets []target `json:"targets"`
	Panels  []panel  `json:"panels"` // a collapsed row's
}

type target struct {
	Expr  string `json:"expr"`
	RefID string `json:"refId"` //nolint:tagliatelle // Grafana's name
}

type variable struct {
	Name  string          `json:"name"`
	Type  string          `json:"type"`
	Query json.RawMessage `json:"query"` // a string, or {"query": "..."} in newer schemas
}

// The variables every ledgerd dashboard must offer: one namespace or all,
// one replica or all.
var requiredVariables = []string{"namespace", "instance"}

var (
	// Grafana's interval variables, which stand for a range duration.
	intervalVariable = regexp.MustCompile(`\$(?:\{__(?:rate_)?interval\}|__rate_interval|__interval|__range)`)
	// Any other variable, which ledgerd's dashboard uses in label matchers.
	otherVariable = regexp.MustCompile(`\$(?:\{[A-Za-z_][A-Za-z0-9_:]*\}|[A-Za-z_][A-Za-z0-9_]*)`)
	// A query variable's label_values(selector, label).
	labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)
)

// substitute replaces Grafana's variables by what they could be when the
// query runs, so that it parses as the PromQL Prometheus receives: a
// duration for the interval variables, a regular expression matching
// anything for the others (which must then stand inside a label matcher).
func substitute(expr string) string {
	expr = intervalVariable.ReplaceAllString(expr, "5m")
	return otherVariable.ReplaceAllString(expr, ".*")
}

// checkDashboard reads the dashboard and returns the metric selectors of
// its panels' queries and variables' queries.
func checkDashboard(file string) ([]selector, []string) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, []string{err.Error()}
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, []string{fmt.Sprintf("%s: not a dashboard: %v", file, err)}
	}
	var (
		selectors []selector
		problems  []string
	)
	if d.Title == "" || d.UID == "" {
		problems = append(problems, file+": the dashboard needs a title and a uid")
	}
	names := map[string]bool{}
	for _, v := range d.Templating.List {
		names[v.Name] = true
		if v.Type != "query" {
			continue
		}
		query := queryOf(v.Query)
		m := labelValues.FindStringSubmatch(query)
		if m == nil {
			problems = append(problems, fmt.Sprintf("%s: variable %s: query %q is not label_values(<selector>, <label>)", file, v.Name, query))
			continue
		}
		found, err := selectorsOf(fmt.Sprintf("%s: variable %s", file, v.Name), substitute(m[1]))
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		selectors = append(selectors, found...)
	}
	for _, name := range requiredVariables {
		if !names[name] {
			problems = append(problems, fmt.Sprintf("%s: no $%s variable", file, name))
		}
	}

	var walk func([]panel)
	queries := 0
	walk = func(panels []panel) {
		for _, p := range panels {
			walk(p.Panels)
			if p.Type == "row" || p.Type == "text" {
				continue
			}
			if len(p.Targets) == 0 {
				problems = append(problems, fmt.Sprintf("%s: panel %q has no query", file, p.Title))
			}
			for _, t := range p.Targets {
				queries++
				where := fmt.Sprintf("%s: panel %q query %s", file, p.Title, t.RefID)
				if strings.TrimSpace(t.Expr) == "" {
					problems = append(problems, where+": no expr")
					continue
				}
				found, err := selectorsOf(where, substitute(t.Expr))
				if err != nil {
					problems = append(problems, err.Error())
					continue
				}
				selectors = append(selectors, found...)
			}
		}
	}
	walk(d.Panels)
	if queries == 0 {
		problems = append(problems, file+": no queries")
	}
	return selectors, problems
}

// queryOf returns a query variable's query, which Grafana writes as a
// string or as an object with a query field.
func queryOf(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var q struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(raw, &q)
	return q.Query
}
