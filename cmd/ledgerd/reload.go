package main

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/ledgerd/ledgerd/server"
)

// reloadableKeys are the settings a reload applies to a running server.
// A change to any other is logged as needing a restart. The TLS files are
// not here because they need no reload: the server re-reads them when they
// change on disk (server.TLSConfig); a change of their paths needs a
// restart.
var reloadableKeys = map[string]bool{
	"log-level":                  true,
	"rate-limit-principal":       true,
	"rate-limit-principal-burst": true,
	"rate-limit-namespace":       true,
	"rate-limit-namespace-burst": true,
	// --insecure-dev's rate limits follow from it, but it needs a restart.
}

// configPollInterval is how often serve checks whether its configuration
// file's content changed, to reload it without a signal (a Kubernetes
// ConfigMap's update, which no process is told about).
const configPollInterval = 2 * time.Second

// reloadKey is the context key of the channel on which reload requests
// (SIGHUP) arrive.
type reloadKey struct{}

// withReloads returns ctx carrying requests, a channel that receives a
// value each time the configuration should be read again.
func withReloads(ctx context.Context, requests <-chan struct{}) context.Context {
	return context.WithValue(ctx, reloadKey{}, requests)
}

// reloadRequests returns the channel of withReloads, or nil (which never
// receives) if ctx carries none.
func reloadRequests(ctx context.Context) <-chan struct{} {
	requests, _ := ctx.Value(reloadKey{}).(<-chan struct{})
	return requests
}

// notifyReload returns a context whose reload requests are the SIGHUPs the
// process receives, until stop. Commands other than serve ignore them.
func notifyReload(parent context.Context) (ctx context.Context, stop func()) {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP)
	requests := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-signals:
				select {
				case requests <- struct{}{}:
				default: // one is pending already: it will read the latest
				}
			case <-done:
				return
			}
		}
	}()
	return withReloads(parent, requests), func() {
		signal.Stop(signals)
		close(done)
	}
}

// reloadTargets are what a reload changes in a running server.
type reloadTargets struct {
	logLevel *slog.LevelVar
	server   *server.Server
}

// watchConfig reloads the configuration on each reload request (SIGHUP)
// and, with a --config file, whenever the file's content changes, until
// ctx ends or stop is called. A reload reads every layer again (see
// parseConfig): if the result is invalid, nothing changes and the error is
// logged; otherwise the reloadable settings are applied, and every other
// setting whose value differs from the running one is logged as needing a
// restart (at each reload, until the process restarts).
func watchConfig(ctx context.Context, cfg config, targets reloadTargets, logger *slog.Logger) (stop func()) {
	if cfg.reread == nil || cfg.Layers == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	running := map[string]string{}
	for _, s := range cfg.Layers.Settings {
		running[s.Key] = s.Value
	}
	file, digest := cfg.Layers.File, cfg.Layers.fileDigest
	reload := func(why string) {
		next, err := cfg.reread()
		if err != nil {
			logger.Error("configuration not reloaded: the running one stays", "trigger", why, "error", err)
			return
		}
		var applied, restart []string
		for _, s := range next.Layers.Settings {
			if running[s.Key] == s.Value {
				continue
			}
			if !reloadableKeys[s.Key] {
				restart = append(restart, s.Key)
				logger.Warn("configuration changed, but this setting needs a restart to apply", "key", s.Key,
					"running", redact(s.Key, running[s.Key]), "configured", redact(s.Key, s.Value), "source", s.Source.String())
				continue
			}
			applied = append(applied, s.Key)
			running[s.Key] = s.Value
		}
		targets.server.SetRateLimits(next.RateLimits)
		slices.Sort(applied)
		// The summary is logged if either level admits it: a reload from
		// warn to info says so too.
		targets.logLevel.Set(min(targets.logLevel.Level(), next.LogLevel))
		defer targets.logLevel.Set(next.LogLevel)
		logger.Info("configuration reloaded", "trigger", why, "applied", applied, "restart_needed", restart,
			"log_level", next.LogLevel.String(), "rate_limit_principal", next.RateLimits.PerPrincipal.PerSecond,
			"rate_limit_namespace", next.RateLimits.PerNamespace.PerSecond)
	}
	go func() {
		defer close(done)
		var poll <-chan time.Time // nil without a file: never
		if file != "" {
			ticker := time.NewTicker(configPollInterval)
			defer ticker.Stop()
			poll = ticker.C
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-reloadRequests(ctx):
				// The content read now is the one to compare with: the
				// polls reload only what changes after it.
				if content, err := os.ReadFile(file); err == nil {
					digest = sha256.Sum256(content)
				}
				reload("SIGHUP")
			case <-poll:
				content, err := os.ReadFile(file)
				if err != nil || sha256.Sum256(content) == digest {
					continue // a file being replaced may be missing for a moment: the next poll sees it
				}
				digest = sha256.Sum256(content)
				reload("file changed")
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
