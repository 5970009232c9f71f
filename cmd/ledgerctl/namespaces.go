package main

import (
	"context"
	"flag"
	"math"

	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

func namespacesCommand() *command {
	return &command{
		name:    "namespaces",
		summary: "List, show, create and change namespaces: the unit of policy (lease TTLs,\nresult size, retention, attempts, event retention).",
		subcommands: "  list                       list the namespaces and their settings\n" +
			"  show NAME                  show one namespace's settings\n" +
			"  create NAME --reason R [settings]\n" +
			"                             create a namespace; unset settings take the server's defaults\n" +
			"  set NAME --reason R [settings]\n" +
			"                             change the settings given, keep the others\n",
	}
}

func namespacesListCommand() *command {
	var limit int
	return &command{
		name:    "namespaces list",
		maxArgs: 0,
		summary: "List the namespaces and their settings, by name\n(LedgerAdminService.ListNamespaces).",
		details: "-o json prints one Namespace per line.",
		flags: func(fs *flag.FlagSet) {
			limitFlag(fs, &limit, "namespaces")
		},
		run: func(ctx context.Context, c *cli, _ []string) error {
			if limit < 0 {
				return usageErrorf("--limit must not be negative")
			}
			admin := c.client.Admin()
			namespaces := listing[*ledgerv1.Namespace]{noun: "namespaces", header: namespacesHeader, row: namespaceRow}
			return namespaces.write(ctx, c, limit, func(ctx context.Context, pageSize int32, token string) ([]*ledgerv1.Namespace, string, error) {
				response, err := admin.ListNamespaces(ctx, &ledgerv1.ListNamespacesRequest{PageSize: pageSize, PageToken: token})
				return response.GetNamespaces(), response.GetNextPageToken(), err
			})
		},
	}
}

func namespacesShowCommand() *command {
	return &command{
		name:    "namespaces show",
		args:    "NAME",
		minArgs: 1, maxArgs: 1,
		summary: "Show one namespace's settings and what it uses of its quotas (LedgerAdminService.GetNamespace).",
		details: "-o json prints the GetNamespaceResponse (namespace, usage, and the answering replica's activity over the last hour).\n\nExit codes: 3 unknown namespace.",
		run: func(ctx context.Context, c *cli, args []string) error {
			return callAndShow(ctx, c, func(ctx context.Context) (*ledgerv1.GetNamespaceResponse, error) {
				return c.client.Admin().GetNamespace(ctx, &ledgerv1.GetNamespaceRequest{Name: args[0]})
			}, func(response *ledgerv1.GetNamespaceResponse) error {
				return writeNamespace(c.stdout, response.GetNamespace(), response.GetUsage())
			})
		},
	}
}

func namespacesCreateCommand() *command {
	var change namespaceChange
	return &command{
		name:    "namespaces create",
		args:    "NAME",
		minArgs: 1, maxArgs: 1,
		summary: "Create a namespace (LedgerAdminService.CreateNamespace). Settings not given\ntake the server's defaults. Audited with your identity and --reason.",
		details: "Durations are Go durations (90s, 1h30m) or whole days (7d). A namespace is\n" +
			"also created with the defaults on its first Reserve; create it first to give\n" +
			"it other settings from the start. Sent once, never retried.\n\n" +
			"-o json prints the Namespace.\n\n" +
			"Exit codes: 4 the namespace exists (ALREADY_EXISTS); 6 a setting out of bounds.",
		flags: change.register,
		run: func(ctx context.Context, c *cli, args []string) error {
			request, err := change.settings()
			if err != nil {
				return err
			}
			return callAndShow(ctx, c, func(ctx context.Context) (*ledgerv1.Namespace, error) {
				response, err := c.client.Admin().CreateNamespace(ctx, &ledgerv1.CreateNamespaceRequest{
					Name: args[0], Settings: request, Reason: change.reason,
				})
				return response.GetNamespace(), err
			}, c.writeNamespace)
		},
	}
}

func namespacesSetCommand() *command {
	var change namespaceChange
	return &command{
		name:    "namespaces set",
		args:    "NAME",
		minArgs: 1, maxArgs: 1,
		summary: "Change a namespace's settings (LedgerAdminService.UpdateNamespace): only the\nsettings given are sent, the others are kept. Every ledgerd replica applies the\nchange within its namespace cache time (10s). Audited with your identity and\n--reason.",
		details: "Durations are Go durations (90s, 1h30m) or whole days (7d).\n\n" +
			"-o json prints the Namespace.\n\n" +
			"Exit codes: 3 unknown namespace; 6 a setting out of bounds.",
		flags: change.register,
		run: func(ctx context.Context, c *cli, args []string) error {
			request, err := change.settings()
			if err != nil {
				return err
			}
			if request == nil {
				return usageErrorf("nothing to change: give at least one setting flag")
			}
			return callAndShow(ctx, c, func(ctx context.Context) (*ledgerv1.Namespace, error) {
				response, err := c.client.Admin().UpdateNamespace(ctx, &ledgerv1.UpdateNamespaceRequest{
					Name: args[0], Settings: request, Reason: change.reason,
				})
				return response.GetNamespace(), err
			}, c.writeNamespace)
		},
	}
}

// writeNamespace shows the namespace that create and set answer with, as
// key/value lines.
func (c *cli) writeNamespace(n *ledgerv1.Namespace) error {
	return writeNamespace(c.stdout, n, nil)
}

// namespaceChange is the flags of namespaces create and set: --reason and
// the settings, of which only those given are sent.
type namespaceChange struct {
	fs                                                      *flag.FlagSet
	reason                                                  string
	defaultLeaseTTL, maxLeaseTTL, retention, eventRetention durationFlag
	maxResultBytes, maxAttempts                             int
	maxHeldLeases, maxStoredBytes                           int64
}

func (s *namespaceChange) register(fs *flag.FlagSet) {
	s.fs = fs
	reasonFlag(fs, &s.reason)
	fs.Var(&s.defaultLeaseTTL, "default-lease-ttl", "lease `DURATION` given to a Reserve that asks for none")
	fs.Var(&s.maxLeaseTTL, "max-lease-ttl", "longest lease (`DURATION`) a request may ask for")
	fs.IntVar(&s.maxResultBytes, "max-result-bytes", 0, "largest result a Complete may store, in `BYTES`")
	fs.Var(&s.retention, "retention", "`DURATION` completed and failed entries are kept")
	fs.IntVar(&s.maxAttempts, "max-attempts", 0, "grants (`N`) after which a retryable failure turns permanent; 0: no limit")
	fs.Var(&s.eventRetention, "event-retention", "`DURATION` audit events are kept")
	fs.Int64Var(&s.maxHeldLeases, "max-held-leases", 0, "quota: unexpired leases (`N`) the namespace may hold at once; 0: no quota")
	fs.Int64Var(&s.maxStoredBytes, "max-stored-bytes", 0, "quota: `BYTES` the namespace's entries may store (keys, owners, labels, checkpoints, results, errors); 0: no quota")
}

// settings requires --reason, and returns the settings given, or nil if
// none was.
func (s *namespaceChange) settings() (*ledgerv1.NamespaceSettings, error) {
	if err := requireReason(s.reason); err != nil {
		return nil, err
	}
	given := false
	duration := func(name string, f durationFlag) *durationpb.Duration {
		if !isSet(s.fs, name) {
			return nil
		}
		given = true
		return durationpb.New(f.d)
	}
	var problem error
	count := func(name string, n int) *int32 {
		if !isSet(s.fs, name) {
			return nil
		}
		if n < 0 || n > math.MaxInt32 {
			problem = usageErrorf("--%s must be between 0 and %d", name, math.MaxInt32)
		}
		given = true
		n32 := int32(n)
		return &n32
	}
	quota := func(name string, n int64) *int64 {
		if !isSet(s.fs, name) {
			return nil
		}
		if n < 0 {
			problem = usageErrorf("--%s must be 0 (no quota) or more, got %d", name, n)
		}
		given = true
		return &n
	}
	settings := &ledgerv1.NamespaceSettings{
		DefaultLeaseTtl: duration("default-lease-ttl", s.defaultLeaseTTL),
		MaxLeaseTtl:     duration("max-lease-ttl", s.maxLeaseTTL),
		MaxResultBytes:  count("max-result-bytes", s.maxResultBytes),
		Retention:       duration("retention", s.retention),
		MaxAttempts:     count("max-attempts", s.maxAttempts),
		EventRetention:  duration("event-retention", s.eventRetention),
		MaxHeldLeases:   quota("max-held-leases", s.maxHeldLeases),
		MaxStoredBytes:  quota("max-stored-bytes", s.maxStoredBytes),
	}
	switch {
	case problem != nil:
		return nil, problem
	case !given:
		return nil, nil
	}
	return settings, nil
}
