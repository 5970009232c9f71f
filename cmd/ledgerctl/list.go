package main

import (
	"context"
	"flag"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

func listCommand() *command {
	var (
		states, owner, prefix       string
		updatedAfter, updatedBefore timeFlag
		stuck                       bool
		limit                       int
	)
	return &command{
		name:    "list",
		args:    "NS",
		minArgs: 1, maxArgs: 1,
		summary: "List a namespace's entries in key order (LedgerAdminService.ListEntries),\nfiltered; the filters add up.",
		details: "--stuck lists the leases that ran out without anyone taking the key over: the\n" +
			"workers that held them died or hang. Times are RFC 3339, a date, or a duration\n" +
			"before now by this machine's clock (--updated-after 1h).\n\n" +
			"-o json prints one Entry per line ('ledgerctl get' shows a key's result).",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&states, "state", "", "keep entries in these `STATES`, comma-separated: leased,completed,failed,released")
			fs.StringVar(&owner, "owner", "", "keep entries whose current or last holder is `OWNER`")
			fs.StringVar(&prefix, "prefix", "", "keep keys that start with `PREFIX`")
			fs.Var(&updatedAfter, "updated-after", "keep entries last changed at or after `TIME` (RFC 3339, a date, or a duration ago: 1h)")
			fs.Var(&updatedBefore, "updated-before", "keep entries last changed before `TIME`")
			fs.BoolVar(&stuck, "stuck", false, "keep only leased entries whose lease has run out (by the database's clock)")
			limitFlag(fs, &limit, "entries")
		},
		run: func(ctx context.Context, c *cli, args []string) error {
			if limit < 0 {
				return usageErrorf("--limit must not be negative")
			}
			parsedStates, err := parseStates(states)
			if err != nil {
				return err
			}
			request := &ledgerv1.ListEntriesRequest{
				Namespace:     args[0],
				States:        parsedStates,
				Owner:         owner,
				KeyPrefix:     prefix,
				Stuck:         stuck,
				UpdatedAfter:  updatedAfter.timestamp(),
				UpdatedBefore: updatedBefore.timestamp(),
			}
			admin := c.client.Admin()
			entries := listing[*ledgerv1.Entry]{noun: "entries", header: entriesHeader, row: entryRow}
			return entries.write(ctx, c, limit, func(ctx context.Context, pageSize int32, token string) ([]*ledgerv1.Entry, string, error) {
				request.PageSize, request.PageToken = pageSize, token
				response, err := admin.ListEntries(ctx, request)
				return response.GetEntries(), response.GetNextPageToken(), err
			})
		},
	}
}
