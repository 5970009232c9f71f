package ledger

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// PoolOption adds to what ConfigurePool and ConfigureReadPool set.
type PoolOption func(*pgxpool.Config)

// WithTracerProvider traces the statements that the pool runs: each is a
// span, named after its statement (the file queries/<name>.sql, such as
// "reserve_insert" or "lookup_batch"; "begin", "commit" and the like for
// the others), a child of the span of the call that ran it. A statement
// run outside a traced call (a sweep, the health check) makes no span, so
// that background work does not fill the traces with roots of its own. A
// coalesced statement, which serves many calls at once, is linked to each
// of their spans instead of being a child of one (see traceBatch).
//
// It replaces the pool's pgx tracer, if it had one.
func WithTracerProvider(tp trace.TracerProvider) PoolOption {
	return func(config *pgxpool.Config) {
		config.ConnConfig.Tracer = statementTracer{tracer: tp.Tracer(tracerName)}
	}
}

// tracerName is the instrumentation scope of the statement spans.
const tracerName = "github.com/ledgerd/ledgerd/ledger"

// The attributes of a statement span (OpenTelemetry's database semantic
// conventions, and ledgerd's own for coalescing).
var (
	dbSystem       = attribute.String("db.system.name", "postgresql")
	dbQuerySummary = attribute.Key("db.query.summary")
	dbQueryText    = attribute.Key("db.query.text") // for statements built in code only
	// coalescedCalls is the number of calls a coalesced statement served.
	coalescedCalls = attribute.Key("ledgerd.coalesced.calls")
)

// statementTracer is the pgx tracer of WithTracerProvider. It is ledgerd's
// own rather than a generic pgx tracer because it names spans by the
// statement files and links coalesced statements to their calls.
type statementTracer struct {
	tracer trace.Tracer
}

func (t statementTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	batch, _ := ctx.Value(coalescedBatchKey{}).(*coalescedBatch)
	if batch == nil && !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx // not part of a traced call
	}
	name, fromFile := statementName(data.SQL)
	options := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(dbSystem, dbQuerySummary.String(name)),
	}
	if !fromFile {
		// A file's text is in the repository, with its comments: its name
		// says which it is, and the spans stay small.
		options = append(options, trace.WithAttributes(dbQueryText.String(data.SQL)))
	}
	if batch != nil {
		options = append(options, trace.WithLinks(batch.links...),
			trace.WithAttributes(coalescedCalls.Int(len(batch.links))))
	}
	ctx, span := t.tracer.Start(ctx, name, options...)
	if batch != nil {
		batch.statements = append(batch.statements, span.SpanContext())
	}
	return ctx
}

func (statementTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	if data.Err != nil {
		span.RecordError(data.Err)
		span.SetStatus(codes.Error, data.Err.Error())
	}
	span.End()
}

// statementNames maps the text of every statement file to its name.
var statementNames = func() map[string]string {
	names := make(map[string]string, len(queries))
	for name, text := range queries {
		names[text] = name
	}
	return names
}()

// statementName is the span name of a statement: the name of its file
// (fromFile), or the first word of a statement built in code ("begin",
// "commit").
func statementName(sql string) (name string, fromFile bool) {
	if name, ok := statementNames[sql]; ok {
		return name, true
	}
	first, _, _ := strings.Cut(strings.TrimSpace(sql), " ")
	return strings.ToLower(strings.TrimRight(first, ";")), false
}

// coalescedBatch is what the statement tracer needs to know of a coalesced
// batch (in its statement's context, at coalescedBatchKey): links to the
// spans of the calls it serves, and, once run, the statement spans.
type coalescedBatch struct {
	links      []trace.Link
	statements []trace.SpanContext // filled by the tracer; one goroutine runs the batch
}

type coalescedBatchKey struct{}

// traceBatch prepares the context of a batch's statement for tracing. A
// batch of one call runs as part of that call: its statement is a child of
// the call's span. A batch of many is part of none of them: its statement
// starts a trace of its own, linked to every call's span, and noteCalls
// then records on each call's span which statement it rode. When no call
// is traced (tracing is off), ctx is returned as it is, with a nil batch.
func traceBatch[I any, O any](ctx context.Context, calls []*pendingCall[I, O]) (context.Context, *coalescedBatch) {
	if len(calls) == 1 {
		if span := trace.SpanFromContext(calls[0].ctx); span.SpanContext().IsValid() {
			return trace.ContextWithSpan(ctx, span), nil
		}
		return ctx, nil
	}
	var batch *coalescedBatch
	for _, call := range calls {
		if sc := trace.SpanContextFromContext(call.ctx); sc.IsValid() {
			if batch == nil {
				batch = &coalescedBatch{links: make([]trace.Link, 0, len(calls))}
			}
			batch.links = append(batch.links, trace.Link{SpanContext: sc})
		}
	}
	if batch == nil {
		return ctx, nil
	}
	return context.WithValue(ctx, coalescedBatchKey{}, batch), batch
}

// noteCalls adds an event to the span of each call of a batch, naming the
// statement span that served it (a trace of its own; see traceBatch).
func noteCalls[I any, O any](batch *coalescedBatch, calls []*pendingCall[I, O]) {
	if batch == nil || len(batch.statements) == 0 {
		return
	}
	statement := batch.statements[0]
	event := trace.WithAttributes(
		attribute.String("ledgerd.statement.trace_id", statement.TraceID().String()),
		attribute.String("ledgerd.statement.span_id", statement.SpanID().String()),
		coalescedCalls.Int(len(calls)))
	for _, call := range calls {
		trace.SpanFromContext(call.ctx).AddEvent("coalesced statement", event)
	}
}
