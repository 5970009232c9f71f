package main

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// exposition is what a scraped /metrics page exposes: each sample name (a
// histogram's X_bucket, X_sum and X_count) and the labels its series carry.
type exposition map[string]map[string]bool

// syntheticMetrics are the series Prometheus makes itself for each target,
// which no /metrics page carries.
var syntheticMetrics = map[string]bool{"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true, "ALERTS": true, "ALERTS_FOR_STATE": true}

// targetLabels are the labels Prometheus adds to every series of a target.
var targetLabels = map[string]bool{"job": true, "instance": true}

func readExposition(file string) (exposition, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	exposed := exposition{}
	for name, family := range families {
		names := []string{name}
		switch family.GetType() {
		case dto.MetricType_HISTOGRAM:
			names = []string{name + "_bucket", name + "_sum", name + "_count"}
		case dto.MetricType_SUMMARY:
			names = append(names, name+"_sum", name+"_count")
		default: // one sample name, the family's
		}
		for _, sample := range names {
			labels := map[string]bool{}
			for _, m := range family.GetMetric() {
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = true
				}
			}
			if strings.HasSuffix(sample, "_bucket") {
				labels["le"] = true
			}
			exposed[sample] = labels
		}
	}
	return exposed, nil
}

// missing returns a problem for each selector whose metric is not exposed,
// or that matches on a label its metric does not carry.
func (e exposition) missing(selectors []selector) []string {
	var problems []string
	for _, s := range selectors {
		if syntheticMetrics[s.metric] {
			continue
		}
		labels, ok := e[s.metric]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: metric %s is not exposed by ledgerd", s.where, s.metric))
			continue
		}
		for _, l := range s.labels {
			if !labels[l] && !targetLabels[l] {
				problems = append(problems, fmt.Sprintf("%s: metric %s has no label %s (it has %s)", s.where, s.metric, l, strings.Join(slices.Sorted(maps.Keys(labels)), ", ")))
			}
		}
	}
	return problems
}
