package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
)

// Profiles (issue 15): --pprof ADDR serves Go's runtime profiles (net/http/pprof) on a
// listener of their own, plain HTTP, for the operator measuring the server. A profile
// shows request paths, timings and memory, so the address must be a loopback one: the
// listener is never reachable from the network (TestConfig_PprofIsLoopbackOnly); reach
// it from elsewhere through an SSH tunnel. Off by default.

// checkPprofAddr accepts host:port with a loopback host (localhost, 127.0.0.0/8, ::1).
func checkPprofAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port, got %q", addr)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("must be a loopback address (127.0.0.1:PORT, [::1]:PORT or localhost:PORT), got %q: profiles are never served to the network", addr)
	}
	return nil
}

// pprofHandler serves the profiles under /debug/pprof/.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

// openPprof listens on cfg.Pprof when it is set: the listener and its server, or nils.
func (s *Server) openPprof(ctx context.Context) error {
	if s.cfg.Pprof == "" {
		return nil
	}
	ln, err := listen(ctx, "pprof", s.cfg.Pprof)
	if err != nil {
		return err
	}
	s.pprofLn = ln
	s.pprof = newHTTPServer(ctx, pprofHandler(), s.log, nil)
	// A CPU profile or trace streams for its ?seconds= (30 by default, as go tool pprof
	// asks): longer than the API's write timeout would allow.
	s.pprof.WriteTimeout = 0
	s.PprofURL = "http://" + ln.Addr().String() + "/debug/pprof/"
	return nil
}
