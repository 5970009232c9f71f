import sys
p=sys.argv[1]+'/server/interceptors.go'
s=open(p).read()
start=s.index('func requestLog(logger *slog.Logger) grpc.UnaryServerInterceptor {')
end=s.index('// outcomeSlotKey is')
new='''func requestLog(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		slot := new(string)
		resp, err := handler(context.WithValue(ctx, outcomeSlotKey{}, slot), req)
		code := status.Code(err)
		level := slog.Level(logging.DefaultServerCodeToLevel(code))
		if !logger.Enabled(ctx, level) {
			return resp, err // nothing is built for a line nobody reads
		}
		service, method, _ := strings.Cut(strings.TrimPrefix(info.FullMethod, "/"), "/")
		attrs := make([]slog.Attr, 0, 16)
		attrs = append(attrs,
			slog.String("protocol", "grpc"), slog.String("grpc.component", "server"),
			slog.String("grpc.service", service), slog.String("grpc.method", method),
			slog.String("grpc.method_type", "unary"))
		if p, ok := peer.FromContext(ctx); ok {
			attrs = append(attrs, slog.String("peer.address", p.Addr.String()))
		}
		attrs = append(attrs, slog.String("grpc.start_time", start.Format(time.RFC3339)))
		if d, ok := ctx.Deadline(); ok {
			attrs = append(attrs, slog.String("grpc.request.deadline", d.Format(time.RFC3339)))
		}
		attrs = append(attrs, slog.String("grpc.code", code.String()))
		if err != nil {
			attrs = append(attrs, slog.String("grpc.error", err.Error()))
		}
		namespace, key := requestKey(req)
		if namespace != "" {
			attrs = append(attrs, slog.String("namespace", namespace))
		}
		if key != "" {
			attrs = append(attrs, slog.String("key", key))
		}
		if *slot != "" {
			attrs = append(attrs, slog.String("outcome", *slot))
		}
		attrs = append(attrs, slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000))
		logger.LogAttrs(ctx, level, "finished call", attrs...)
		return resp, err
	}
}

'''
s=s[:start]+new+s[end:]
# drop requestLogFields (unused now) is fine to keep; add peer import
s=s.replace('"google.golang.org/grpc/codes"\n','"google.golang.org/grpc/codes"\n\t"google.golang.org/grpc/peer"\n',1)
open(p,'w').write(s)
