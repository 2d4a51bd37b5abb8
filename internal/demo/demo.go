// Package demo is the composition root of `moat demo`: the seed scenario on one machine
// with embedded defaults. It starts a security service on SQLite in a data directory, then,
// through the public client package only (as any tenant's tooling would), creates tenant
// Contoso with its own administrator and the DW100 dishwasher product with its default
// device groups; Contoso makes its offline signing key (registering only the public half) and
// packs the DW100 application image. It reports what it did. Later parts of moat extend the
// story (publishing, devices, attestation, telemetry) here.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/tuf"
)

// Config is what the demo is built from.
type Config struct {
	// Addr is where the demo's server listens; when it is taken the demo picks a free port.
	Addr string
	// DataDir holds the demo's state.
	DataDir string
}

// Result is what the demo made, for the caller to print or use.
type Result struct {
	URL           string
	CAFile        string
	OperatorToken string
	Tenant        client.Tenant
	AdminToken    string
	Product       client.Product
	Groups        []client.DeviceGroup
	// SigningKey is Contoso's registered offline key; KeyFile holds its private half,
	// which never left the demo's machine.
	SigningKey client.SigningKey
	KeyFile    string
	// AppImage is the packed DW100 application image and AppManifest its manifest.
	AppImage    string
	AppSHA256   string
	AppManifest image.Manifest
	// TrustAnchor is the platform's 1.root.json, which devices pin; AppsVersion the version
	// of Contoso's apps.json that lists the DW100 app.
	TrustAnchor string
	AppsVersion int64
	// OSPath and OSSHA256 name the platform's OS image on both feeds.
	OSPath   string
	OSSHA256 string
	// CAChain is the PEM chain Contoso's cloud trusts its devices with.
	CAChain string
	// Devices is the demo fleet: what each device attested and installed; the last one
	// is the device with a tampered app.
	Devices []DeviceResult
	// FieldDevice is the field-test device that rolled back the crashing app 2.0.0.
	FieldDevice string
}

// DeviceResult is one demo device's story.
type DeviceResult struct {
	ID string
	// Serial and NotAfter describe its certificate; empty when attestation was refused.
	Serial   string
	NotAfter time.Time
	// Refusal and Detail are the reason support staff see when it was refused.
	Refusal, Detail string
	// Installed lists the images it downloaded, verified and committed.
	Installed []string
}

// Demo is a running demo.
type Demo struct {
	srv    *server.Server
	dir    string
	played chan struct{}
	// Contoso's offline signing state for apps.json (the demo plays Contoso's engineers).
	apps      map[string]tuf.TargetFile
	appSigner signature.Signer
	expires   time.Time
	osImage   []byte // the OS image package the fleet booted
	exe       string // this binary: the demo's DW100 app images launch it as the app
	agents    []*agent.Agent
	agentsWG  sync.WaitGroup
	agentLog  *slog.Logger
	// Result is complete once Played is closed.
	Result Result
}

// Played is closed when the scenario has been played and Result is complete.
func (d *Demo) Played() <-chan struct{} { return d.played }

// Start starts the server and plays the scenario. The caller runs Serve.
func Start(ctx context.Context, cfg Config, log *slog.Logger, out io.Writer) (*Demo, error) {
	scfg := server.DefaultConfig()
	scfg.Addr = cfg.Addr
	scfg.DataDir = cfg.DataDir
	srv, err := server.Open(ctx, scfg, log)
	if errors.Is(err, syscall.EADDRINUSE) {
		host, _, _ := net.SplitHostPort(cfg.Addr)
		fmt.Fprintf(out, "%s is in use; the demo takes a free port instead.\n", cfg.Addr)
		scfg.Addr = net.JoinHostPort(host, "0")
		srv, err = server.Open(ctx, scfg, log)
	}
	if err != nil {
		return nil, err
	}
	if srv.BootstrapToken == "" {
		return nil, fmt.Errorf("data directory %s already has a platform operator; the demo needs a fresh one", cfg.DataDir)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return &Demo{srv: srv, dir: cfg.DataDir, played: make(chan struct{}), exe: exe, agentLog: log.With("component", "agent"), Result: Result{
		URL: srv.URL, CAFile: filepath.Join(cfg.DataDir, "tls", "ca.pem"), OperatorToken: srv.BootstrapToken,
	}}, nil
}

// Serve runs the server until ctx is done, playing the scenario once it answers. The
// scenario's result is reported on out; a scenario failure stops the server and is returned.
func (d *Demo) Serve(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan error, 1)
	go func() { done <- d.srv.Serve(ctx) }()
	if err := d.play(ctx, out); err != nil {
		cancel(err)
		d.agentsWG.Wait()
		return errors.Join(fmt.Errorf("demo scenario: %w", err), <-done)
	}
	close(d.played)
	err := <-done
	d.agentsWG.Wait()
	return err
}

func (d *Demo) play(ctx context.Context, out io.Writer) error {
	op, err := client.New(d.Result.URL, client.WithToken(d.Result.OperatorToken), client.WithCACertPEM(d.srv.CAPEM))
	if err != nil {
		return err
	}
	step := func(format string, args ...any) { fmt.Fprintf(out, "  - "+format+"\n", args...) }
	fmt.Fprintf(out, "\nmoat demo: security service at %s\n\n", d.Result.URL)

	me, err := op.GetMe(ctx)
	if err != nil {
		return fmt.Errorf("platform operator: %w", err)
	}
	step("platform operator %q (%s) bootstrapped", me.User.Name, me.User.ID)

	t, err := op.CreateTenant(ctx, client.TenantCreate{Name: "Contoso"})
	if err != nil {
		return fmt.Errorf("create tenant Contoso: %w", err)
	}
	d.Result.Tenant = t
	step("tenant %s (%s) created", t.Name, t.ID)

	admin, err := op.CreateMember(ctx, t.ID, client.MemberCreate{Name: "contoso-admin", Role: client.RoleAdministrator})
	if err != nil {
		return fmt.Errorf("create Contoso administrator: %w", err)
	}
	d.Result.AdminToken = admin.Secret
	step("user %s (%s) is Contoso's Administrator", admin.Member.User.Name, admin.Member.User.ID)

	// From here on Contoso acts for itself; the platform operator steps back.
	contoso, err := client.New(d.Result.URL, client.WithToken(admin.Secret), client.WithCACertPEM(d.srv.CAPEM))
	if err != nil {
		return err
	}
	if err := contoso.DeleteMember(ctx, t.ID, me.User.ID); err != nil {
		return fmt.Errorf("platform operator leaves Contoso: %w", err)
	}
	step("the platform operator left tenant Contoso (it sees none of Contoso's data)")

	p, err := contoso.CreateProduct(ctx, t.ID, client.ProductCreate{Name: "DW100", Description: "Contoso DW100 connected dishwasher"})
	if err != nil {
		return fmt.Errorf("create product DW100: %w", err)
	}
	d.Result.Product = p
	step("product %s (%s) created with its default device groups:", p.Name, p.ID)
	groups, err := client.Collect(ctx, client.ListOptions{}, func(ctx context.Context, o client.ListOptions) (client.Page[client.DeviceGroup], error) {
		return contoso.ListDeviceGroups(ctx, t.ID, p.ID, o)
	})
	if err != nil {
		return fmt.Errorf("list DW100 device groups: %w", err)
	}
	d.Result.Groups = groups
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "      GROUP\tOS FEED\tUPDATE POLICY\tID")
	for _, g := range groups {
		fmt.Fprintf(tw, "      %s\t%s\t%s\t%s\n", g.Name, g.OSFeed, g.UpdatePolicy, g.ID)
	}
	tw.Flush()

	if err := d.offline(ctx, contoso, out, step); err != nil {
		return err
	}
	if err := d.publish(ctx, op, contoso, out, step); err != nil {
		return err
	}
	if err := d.fleet(ctx, op, contoso, out, step); err != nil {
		return err
	}
	fmt.Fprintf(out, `
Server:              %s
TLS CA:              %s (SHA-256 %s)
Platform operator:   %s
Contoso admin token: %s
OpenAPI document:    %s/api/v1/openapi.json

Try it from another terminal:
  moat login --server %s --ca-cert %s --token %s
  moat product list
  moat device-group list --product DW100
  moat image list
  moat device list
  moat device show %s

The demo runs until Ctrl-C.
`, d.Result.URL, d.Result.CAFile, server.Fingerprint(d.srv.CAPEM), d.Result.OperatorToken, d.Result.AdminToken,
		d.Result.URL, d.Result.URL, d.Result.CAFile, d.Result.AdminToken, d.Result.Devices[len(d.Result.Devices)-1].ID)
	return nil
}
