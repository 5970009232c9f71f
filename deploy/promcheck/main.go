// Command promcheck checks ledgerd's Prometheus rules and Grafana dashboard
// as Prometheus and Grafana would read them, and against what a live ledgerd
// exposes:
//
//   - the rules file parses and validates with Prometheus' own rule parser
//     (rulefmt, which type-checks every expression with the PromQL parser);
//     every alert has a severity label (critical, warning or info) and a
//     runbook_url annotation, a path with an anchor (--runbook-prefix):
//     promcheck prints each one as "runbook: <url>", for the caller to check
//     that it resolves (ledgerd's test does, with its Markdown link checker);
//   - the dashboard is valid JSON, and every query of its panels and
//     variables parses as PromQL once Grafana's variables are substituted;
//   - the lease gauges, which every replica reports for the whole
//     database, are never added up across replicas (nor left unaggregated);
//   - every metric that a rule or a query names is in the scraped
//     exposition (--metrics), with every label that a selector matches on.
//
// It is a module of its own so that Prometheus' large dependency tree stays
// out of ledgerd's go.mod. ledgerd's tests run it (cmd/ledgerd's
// TestMonitoringArtifacts) on a /metrics page scraped from a live ledgerd:
//
//	go run . --rules ../prometheus/ledgerd-rules.yaml --dashboard ../grafana/ledgerd.json \
//	    --metrics metrics.txt
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "promcheck:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	flags := flag.NewFlagSet("promcheck", flag.ContinueOnError)
	rulesFile := flags.String("rules", "", "the Prometheus rules file to check (required)")
	dashboardFile := flags.String("dashboard", "", "the Grafana dashboard JSON to check (required)")
	runbookPrefix := flags.String("runbook-prefix", "docs/operations.md#", "what every runbook_url annotation starts with, before its anchor")
	metricsFile := flags.String("metrics", "", "a /metrics page scraped from ledgerd, in Prometheus' text format: every metric named must be in it (optional)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *rulesFile == "" || *dashboardFile == "" {
		return errors.New("--rules and --dashboard are required")
	}

	var problems []string
	rules, runbooks, ruleProblems := checkRules(*rulesFile, *runbookPrefix)
	problems = append(problems, ruleProblems...)
	queries, dashboardProblems := checkDashboard(*dashboardFile)
	problems = append(problems, dashboardProblems...)
	selectors := slices.Concat(rules, queries)
	problems = append(problems, summedTwice(selectors)...)

	if *metricsFile != "" {
		exposed, err := readExposition(*metricsFile)
		if err != nil {
			return err
		}
		problems = append(problems, exposed.missing(selectors)...)
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stdout, p)
		}
		return fmt.Errorf("%d problems", len(problems))
	}
	for _, url := range runbooks {
		fmt.Fprintln(stdout, "runbook:", url)
	}
	fmt.Fprintf(stdout, "promcheck: %d expressions checked, %d metric selectors\n", countExprs(selectors), len(selectors))
	return nil
}
