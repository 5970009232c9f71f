package server

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// drainingHealth is grpc's standard health service, except that its Watch
// streams end when the server shuts down, once they have told the watcher
// NOT_SERVING. Without this, any client with health checking enabled keeps
// a Watch stream open, and GracefulStop waits for it until the shutdown
// timeout cuts every RPC off.
type drainingHealth struct {
	*health.Server
	draining     chan struct{}
	drainingOnce sync.Once
}

func newDrainingHealth() *drainingHealth {
	return &drainingHealth{Server: health.NewServer(), draining: make(chan struct{})}
}

// drain sets every service NOT_SERVING and ends the Watch streams.
func (h *drainingHealth) drain() {
	h.Shutdown()
	h.drainingOnce.Do(func() { close(h.draining) })
}

// notServingNoticeTimeout bounds how long a Watch stream may take to send
// its NOT_SERVING notice once draining has begun.
const notServingNoticeTimeout = time.Second

// Watch serves health.Server's Watch until the watcher leaves or the server
// drains.
func (h *drainingHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	watch := &watchStream{Health_WatchServer: stream, ctx: ctx, toldNotServing: make(chan struct{})}
	go func() {
		select {
		case <-h.draining:
			select {
			case <-watch.toldNotServing:
			case <-time.After(notServingNoticeTimeout):
			case <-ctx.Done():
			}
			cancel()
		case <-ctx.Done():
		}
	}()
	return h.Server.Watch(req, watch)
}

// watchStream is a Watch stream with a context that drain can cancel, and
// that notes when the watcher has been told the service is not serving.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx            context.Context
	toldOnce       sync.Once
	toldNotServing chan struct{}
}

func (s *watchStream) Context() context.Context { return s.ctx }

func (s *watchStream) Send(res *healthpb.HealthCheckResponse) error {
	err := s.Health_WatchServer.Send(res)
	if res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		s.toldOnce.Do(func() { close(s.toldNotServing) })
	}
	return err
}
