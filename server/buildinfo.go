package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ledgerd/ledgerd/internal/version"
)

// newBuildInfo returns ledgerd_build_info: a gauge that is always 1, labelled
// with the build that serves (see internal/version), so that a dashboard
// can show which versions run during a rolling upgrade
// (count by (version) (ledgerd_build_info)) and a query can join the
// version onto any other series.
func newBuildInfo(build version.Info) prometheus.Collector {
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ledgerd_build_info",
		Help: "Always 1; the labels name the running build: version, commit, build_date (RFC 3339) and go_version.",
		ConstLabels: prometheus.Labels{
			"version":    build.Version,
			"commit":     build.Commit,
			"build_date": build.BuildDate,
			"go_version": build.GoVersion,
		},
	})
	info.Set(1)
	return info
}
