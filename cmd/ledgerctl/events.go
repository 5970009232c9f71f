package main

import (
	"context"
	"flag"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

func eventsCommand() *command {
	var (
		since, until timeFlag
		kinds        string
		limit        int
		unsettled    bool
	)
	return &command{
		name:    "events",
		args:    "NS",
		minArgs: 1, maxArgs: 1,
		summary: "Export a namespace's audit events in a time range, oldest first\n(LedgerAdminService.ListEvents): one Event per line, as JSON (protojson, proto\nfield names), ready for jq or a log store. -o table shows them as a table.",
		details: "Times are RFC 3339, a date (midnight UTC), or a duration before now by this\n" +
			"machine's clock (--since 24h). Without --since, from the oldest event kept\n" +
			"(see the namespace's event_retention); without --until, up to now.\n\n" +
			"The events of the last 10 seconds (the server's settling delay) are left out,\n" +
			"so that an export never skips an event still being committed; a note on\n" +
			"stderr says from when. --unsettled lists them too.\n\n" +
			"Example, the stale tokens refused on 1 March 2025:\n" +
			"  ledgerctl events billing --since 2025-03-01 --until 2025-03-02 --kind refused_stale_token",
		jsonByDefault: true,
		flags: func(fs *flag.FlagSet) {
			fs.Var(&since, "since", "keep events at or after `TIME` (RFC 3339, a date, or a duration ago: 24h)")
			fs.Var(&until, "until", "keep events before `TIME`")
			fs.StringVar(&kinds, "kind", "", "keep events of these `KINDS`, comma-separated:\n"+
				enumChoices(ledgerv1.EventKind_name, "EVENT_KIND_"))
			limitFlag(fs, &limit, "events")
			fs.BoolVar(&unsettled, "unsettled", false, "also list the newest events, still settling (not for an export)")
		},
		run: func(ctx context.Context, c *cli, args []string) error {
			if limit < 0 {
				return usageErrorf("--limit must not be negative")
			}
			parsedKinds, err := parseKinds(kinds)
			if err != nil {
				return err
			}
			request := &ledgerv1.ListEventsRequest{
				Namespace:        args[0],
				Kinds:            parsedKinds,
				StartTime:        since.timestamp(),
				EndTime:          until.timestamp(),
				IncludeUnsettled: unsettled,
			}
			admin := c.client.Admin()
			events := listing[*ledgerv1.Event]{
				noun:   "events",
				header: eventsHeader(true),
				row:    func(e *ledgerv1.Event) []string { return eventRow(e, true) },
			}
			var settledUntil *timestamppb.Timestamp
			err = events.write(ctx, c, limit, func(ctx context.Context, pageSize int32, token string) ([]*ledgerv1.Event, string, error) {
				request.PageSize, request.PageToken = pageSize, token
				response, err := admin.ListEvents(ctx, request)
				settledUntil = response.GetSettledUntil()
				return response.GetEvents(), response.GetNextPageToken(), err
			})
			if err == nil && settledUntil != nil {
				fmt.Fprintf(c.stderr, "ledgerctl: events from %s on are still settling and were left out; --unsettled lists them\n",
					formatTime(settledUntil))
			}
			return err
		},
	}
}
