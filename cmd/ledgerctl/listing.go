package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"google.golang.org/protobuf/proto"
)

// callAndShow makes one RPC, bounded by --timeout, and prints its answer:
// as one line of JSON with -o json, else as text says.
func callAndShow[Answer proto.Message](ctx context.Context, c *cli, rpc func(context.Context) (Answer, error), text func(Answer) error) error {
	rpcCtx, cancel := c.rpcContext(ctx)
	defer cancel()
	answer, err := rpc(rpcCtx)
	if err != nil {
		return err
	}
	if c.output == formatJSON {
		return writeJSON(c.stdout, answer)
	}
	return text(answer)
}

// maxPageSize is the largest page the admin listings serve.
const maxPageSize = 1000

// fetchPage gets one page of a listing: at most pageSize items from token
// on, and the token of the next page ("" after the last).
type fetchPage[Item any] func(ctx context.Context, pageSize int32, token string) (items []Item, next string, err error)

// listing describes how a listing is shown.
type listing[Item proto.Message] struct {
	// noun names the items in messages, e.g. "entries".
	noun string
	// header and row are the table's columns.
	header []string
	row    func(Item) []string
}

// write pages through a listing, each page with its own --timeout, and
// prints it as it comes: a table (aligned page by page), or one JSON object
// per line. It stops after limit items when limit is positive, and says so
// on stderr if there were more.
func (l listing[Item]) write(ctx context.Context, c *cli, limit int, fetch fetchPage[Item]) error {
	var table *tabwriter.Writer
	token, written := "", 0
	for {
		pageSize := maxPageSize
		if limit > 0 {
			pageSize = min(limit-written, maxPageSize)
		}
		pageCtx, cancel := c.rpcContext(ctx)
		items, next, err := fetch(pageCtx, int32(pageSize), token)
		cancel()
		if err != nil {
			return err
		}
		if c.output == formatTable && table == nil {
			table = newTable(c.stdout)
			row(table, l.header...)
		}
		for _, item := range items {
			if limit > 0 && written == limit {
				break
			}
			if table != nil {
				row(table, l.row(item)...)
			} else if err := writeJSON(c.stdout, item); err != nil {
				return err
			}
			written++
		}
		if table != nil {
			if err := table.Flush(); err != nil {
				return err
			}
		}
		switch {
		case next == "":
			return nil
		case limit > 0 && written >= limit:
			fmt.Fprintf(c.stderr, "ledgerctl: stopped at --limit %d; there are more %s\n", limit, l.noun)
			return nil
		case next == token:
			return fmt.Errorf("the server returned page token %q twice", next)
		}
		token = next
	}
}

// writeUnpaged is write for a listing the server does not page: one RPC,
// with --timeout, answers with every item.
func (l listing[Item]) writeUnpaged(ctx context.Context, c *cli, fetch func(ctx context.Context) ([]Item, error)) error {
	return l.write(ctx, c, 0, func(ctx context.Context, _ int32, _ string) ([]Item, string, error) {
		items, err := fetch(ctx)
		return items, "", err
	})
}
