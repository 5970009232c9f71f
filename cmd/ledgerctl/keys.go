package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

func getCommand() *command {
	var history bool
	return &command{
		name:    "get",
		args:    "NS KEY",
		minArgs: 2, maxArgs: 2,
		summary: "Show a key's entry: state, owner, fencing token, lease, attempts, result or\nerror, checkpoint, metadata and times (LedgerService.Lookup).",
		details: "A key removed by retention shows state PURGED and purged_at, as long as its\n" +
			"audit events are kept. With --history, the key's audit events follow, oldest\n" +
			"first (the first 100; 'ledgerctl history' shows them all).\n\n" +
			"-o json prints the LookupResponse: {\"entry\":{...},\"history\":[...]}.\n\n" +
			"Exit codes: 3 when the ledger does not know the key.",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&history, "history", false, "add the key's audit events")
		},
		run: func(ctx context.Context, c *cli, args []string) error {
			return callAndShow(ctx, c, func(ctx context.Context) (*ledgerv1.LookupResponse, error) {
				return c.client.Lookup(ctx, &ledgerv1.LookupRequest{
					Namespace: args[0], Key: args[1], IncludeHistory: history,
				})
			}, func(response *ledgerv1.LookupResponse) error {
				if err := writeEntry(c.stdout, response.GetEntry()); err != nil {
					return err
				}
				if !history {
					return nil
				}
				fmt.Fprintln(c.stdout, "\nhistory:")
				table := newTable(c.stdout)
				row(table, eventsHeader(false)...)
				for _, event := range response.GetHistory() {
					row(table, eventRow(event, false)...)
				}
				if err := table.Flush(); err != nil {
					return err
				}
				if response.GetHistoryTruncated() {
					key := quoteArg(args[1])
					if strings.HasPrefix(args[1], "-") {
						key = "-- " + key
					}
					fmt.Fprintf(c.stdout, "(more events: ledgerctl history %s %s)\n", args[0], key)
				}
				return nil
			})
		},
	}
}

func historyCommand() *command {
	var limit int
	return &command{
		name:    "history",
		args:    "NS KEY",
		minArgs: 2, maxArgs: 2,
		summary: "List a key's audit events, oldest first (LedgerAdminService.GetHistory): who\nreserved, took over, completed, failed or released it, and when.",
		details: "-o json prints one Event per line. A key without events prints none (exit 0).",
		flags: func(fs *flag.FlagSet) {
			limitFlag(fs, &limit, "events")
		},
		run: func(ctx context.Context, c *cli, args []string) error {
			if limit < 0 {
				return usageErrorf("--limit must not be negative")
			}
			admin := c.client.Admin()
			events := listing[*ledgerv1.Event]{
				noun:   "events",
				header: eventsHeader(false),
				row:    func(e *ledgerv1.Event) []string { return eventRow(e, false) },
			}
			return events.write(ctx, c, limit, func(ctx context.Context, pageSize int32, token string) ([]*ledgerv1.Event, string, error) {
				response, err := admin.GetHistory(ctx, &ledgerv1.GetHistoryRequest{
					Namespace: args[0], Key: args[1], PageSize: pageSize, PageToken: token,
				})
				return response.GetEvents(), response.GetNextPageToken(), err
			})
		},
	}
}

// quoteArg quotes a command-line argument for a shell when it needs it.
func quoteArg(s string) string {
	for _, r := range s {
		if !(r == '-' || r == '_' || r == '.' || r == '/' || r == ':' ||
			'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	if s == "" {
		return "''"
	}
	return s
}
