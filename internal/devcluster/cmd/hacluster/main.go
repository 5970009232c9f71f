// Command hacluster brings up the Patroni cluster of devcluster.StartHA —
// etcd, a primary and a synchronous standby on 127.0.0.1 — prints its
// multi-host connection URL, and tears everything down on ^C or SIGTERM:
//
//	make ha
//	LEDGER_DATABASE_URL='<the URL>' make run   # in another terminal
//
// With --url-file, the URL is also written to that file once the cluster
// is up.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ledgerd/ledgerd/internal/devcluster"
)

func main() {
	urlFile := flag.String("url-file", "", "also write the connection URL to this file")
	flag.Parse()
	if err := run(*urlFile); err != nil {
		fmt.Fprintln(os.Stderr, "hacluster:", err)
		os.Exit(1)
	}
}

func run(urlFile string) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := devcluster.StartHA(ctx, devcluster.HAConfig{Log: os.Stderr})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Destroy()) }()
	fmt.Println(c.URL())
	for _, m := range c.Members() {
		fmt.Fprintf(os.Stderr, "hacluster: member %s: PostgreSQL on 127.0.0.1:%d, Patroni REST API on 127.0.0.1:%d\n", m.Name, m.Port, m.RESTPort)
	}
	fmt.Fprintf(os.Stderr, "hacluster: logs in %s; ^C stops the cluster\n", c.Dir())
	if urlFile != "" {
		if err := os.WriteFile(urlFile, []byte(c.URL()+"\n"), 0o644); err != nil {
			return err
		}
	}
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "hacluster: stopping")
	return nil
}
