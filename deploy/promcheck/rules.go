package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
)

// severities are the values an alert's severity label may take, the ones
// Alertmanager routes are commonly written for.
var severities = map[string]bool{"critical": true, "warning": true, "info": true}

// checkRules parses and validates the rules file as Prometheus does when it
// loads it (unknown fields are errors), checks each alert's severity and
// runbook_url, and returns the metric selectors of every rule and the
// runbook URLs.
func checkRules(file, runbookPrefix string) ([]selector, []string, []string) {
	groups, errs := rulefmt.ParseFile(file, false, model.LegacyValidation, promql, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		problems := make([]string, 0, len(errs))
		for _, err := range errs {
			problems = append(problems, err.Error())
		}
		return nil, nil, problems
	}
	var (
		selectors []selector
		runbooks  []string
		problems  []string
	)
	rules := 0
	for _, group := range groups.Groups {
		for _, rule := range group.Rules {
			rules++
			where := "record " + rule.Record
			if rule.Alert != "" {
				where = "alert " + rule.Alert
				if severity := rule.Labels["severity"]; !severities[severity] {
					problems = append(problems, fmt.Sprintf("%s: %s: label severity is %q: want critical, warning or info", file, where, severity))
				}
				url := rule.Annotations["runbook_url"]
				if anchor, ok := strings.CutPrefix(url, runbookPrefix); !ok || anchor == "" {
					problems = append(problems, fmt.Sprintf("%s: %s: annotation runbook_url is %q: want %s<anchor>", file, where, url, runbookPrefix))
				} else {
					runbooks = append(runbooks, url)
				}
				if rule.Annotations["summary"] == "" {
					problems = append(problems, fmt.Sprintf("%s: %s: no summary annotation", file, where))
				}
			}
			found, err := selectorsOf(file+": "+where, rule.Expr)
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			selectors = append(selectors, found...)
		}
	}
	if rules == 0 {
		problems = append(problems, file+": no rules")
	}
	return selectors, runbooks, problems
}
