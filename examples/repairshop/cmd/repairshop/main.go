// Command repairshop runs the reference repair shop inventory service
// (examples/repairshop): the part reservations moat cloud's reserve-part action makes.
//
//	repairshop --stock stock.yaml --token-file shop.token --addr 127.0.0.1:8480
//
// Without --tls-cert and --tls-key it serves plain HTTP, and then only on a loopback
// address: the bearer token must not cross a network in clear.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/moat-iot/moat/examples/repairshop"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "repairshop:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("repairshop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8480", "listen address")
	stockFile := fs.String("stock", "", "stock seed file (YAML or JSON: version: 1, parts: {PART: COUNT})")
	tokenFile := fs.String("token-file", "", "file holding the bearer token moat cloud presents")
	roTokenFile := fs.String("read-only-token-file", "", "optional file holding a token that may only look stock up")
	cert := fs.String("tls-cert", "", "TLS certificate (PEM); without it, plain HTTP on loopback only")
	key := fs.String("tls-key", "", "TLS private key (PEM)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg := repairshop.DefaultConfig()
	cfg.Logger = log
	var errs []error
	if *tokenFile == "" {
		errs = append(errs, errors.New("--token-file: required"))
	} else if tok, err := readToken(*tokenFile); err != nil {
		errs = append(errs, err)
	} else {
		cfg.Token = tok
	}
	if *roTokenFile != "" {
		tok, err := readToken(*roTokenFile)
		errs = append(errs, err)
		cfg.ReadOnlyToken = tok
	}
	if *stockFile != "" {
		st, err := repairshop.LoadStock(*stockFile)
		errs = append(errs, err)
		cfg.Stock = st
	}
	if (*cert == "") != (*key == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key: both or neither"))
	}
	if *cert == "" {
		if err := loopbackOnly(*addr); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	srv, err := repairshop.New(cfg)
	if err != nil {
		return err
	}
	hs := srv.HTTPServer(*addr)
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", *addr)
	if err != nil {
		return err
	}
	log.Info("repair shop listening", "addr", ln.Addr().String(), "tls", *cert != "")
	done := make(chan error, 1)
	go func() {
		if *cert != "" {
			done <- hs.ServeTLS(ln, *cert, *key)
		} else {
			done <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return hs.Shutdown(sctx)
}

func readToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}

// loopbackOnly refuses a plain-HTTP address that is not on loopback.
func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--addr: %w", err)
	}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--addr %s: plain HTTP only on a loopback address; give --tls-cert and --tls-key", addr)
}
