// Package migrations holds ledgerd's database schema as numbered SQL files,
// embedded into the binary. ledger.Migrate applies them in order, each in
// its own transaction, and records them.
//
// Files are named NNNNN_description.sql and use goose annotations
// (-- +goose Up / -- +goose Down). Never edit a file that has been released:
// add a new one.
package migrations

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS
