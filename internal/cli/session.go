package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/ident"
)

// userAgent identifies the CLI to the server.
const userAgent = "moat-cli/1"

// session is what one command run needs: its flags, the login state and a client, both
// loaded only when the command first talks to the server (so usage errors come first).
type session struct {
	env       *Env
	output    string // table or json
	tenantRef string // --tenant
	fs        *flag.FlagSet

	cfg *loginConfig
	c   *client.Client
}

func (s *session) json() bool { return s.output == "json" }

func (s *session) config() (*loginConfig, error) {
	if s.cfg == nil {
		c, err := loadConfig(s.env)
		if err != nil {
			return nil, err
		}
		s.cfg = c
	}
	return s.cfg, nil
}

// client returns a client for the logged-in server.
func (s *session) client() (*client.Client, error) {
	if s.c != nil {
		return s.c, nil
	}
	cfg, err := s.config()
	if err != nil {
		return nil, err
	}
	c, err := newClient(s.env, cfg.Server, cfg.Token, []byte(cfg.CACertPEM), cfg.InsecureSkipVerify)
	if err != nil {
		return nil, fmt.Errorf("login state: %w; run 'moat login' again", err)
	}
	s.c = c
	return c, nil
}

func newClient(env *Env, server, token string, caPEM []byte, insecure bool) (*client.Client, error) {
	opts := []client.Option{client.WithToken(token), client.WithUserAgent(userAgent)}
	if len(caPEM) > 0 {
		opts = append(opts, client.WithCACertPEM(caPEM))
	}
	if insecure {
		fmt.Fprintln(env.Stderr, "moat: warning: TLS verification is off (--insecure-skip-verify): anyone on the network path can read your token")
		opts = append(opts, client.WithInsecureSkipVerify())
	}
	return client.New(server, opts...)
}

// tenant resolves --tenant, else the selected tenant, to a tenant ID. It fails closed with
// what to do next when neither is set.
func (s *session) tenant(ctx context.Context) (string, error) {
	ref := s.tenantRef
	if ref == "" {
		cfg, err := s.config()
		if err != nil {
			return "", err
		}
		if cfg.Tenant == "" {
			return "", &cliError{code: ExitUsage, msg: "no tenant selected",
				hint: "run 'moat tenant select NAME' or pass --tenant"}
		}
		return cfg.Tenant, nil
	}
	t, err := s.findTenant(ctx, ref)
	return t.ID, err
}

// inTenant returns a client and the tenant ID a tenant-scoped command works in.
func (s *session) inTenant(ctx context.Context) (*client.Client, string, error) {
	c, err := s.client()
	if err != nil {
		return nil, "", err
	}
	t, err := s.tenant(ctx)
	return c, t, err
}

// findTenant finds a tenant by ID or exact name.
func (s *session) findTenant(ctx context.Context, ref string) (client.Tenant, error) {
	c, err := s.client()
	if err != nil {
		return client.Tenant{}, err
	}
	if ident.Valid("tnt", ref) {
		return c.GetTenant(ctx, ref)
	}
	p, err := c.ListTenants(ctx, client.ListOptions{Name: ref})
	if err != nil {
		return client.Tenant{}, err
	}
	if len(p.Items) == 0 {
		return client.Tenant{}, &cliError{code: ExitNotFound, msg: fmt.Sprintf("no tenant named %q that you can see", ref),
			hint: "run 'moat tenant list' to see the tenants you can use"}
	}
	return p.Items[0], nil
}

// findProduct finds a product of the tenant by ID or exact name.
func (s *session) findProduct(ctx context.Context, tenant, ref string) (client.Product, error) {
	c, err := s.client()
	if err != nil {
		return client.Product{}, err
	}
	if ident.Valid("prd", ref) {
		return c.GetProduct(ctx, tenant, ref)
	}
	p, err := c.ListProducts(ctx, tenant, client.ListOptions{Name: ref})
	if err != nil {
		return client.Product{}, err
	}
	if len(p.Items) == 0 {
		return client.Product{}, &cliError{code: ExitNotFound, msg: fmt.Sprintf("no product named %q in the tenant", ref),
			hint: "run 'moat product list' to see the products"}
	}
	return p.Items[0], nil
}

// findGroup finds a device group of the product by ID or exact name.
func (s *session) findGroup(ctx context.Context, tenant string, prod client.Product, ref string) (client.DeviceGroup, error) {
	c, err := s.client()
	if err != nil {
		return client.DeviceGroup{}, err
	}
	if ident.Valid("grp", ref) {
		return c.GetDeviceGroup(ctx, tenant, prod.ID, ref)
	}
	p, err := c.ListDeviceGroups(ctx, tenant, prod.ID, client.ListOptions{Name: ref})
	if err != nil {
		return client.DeviceGroup{}, err
	}
	if len(p.Items) == 0 {
		return client.DeviceGroup{}, &cliError{code: ExitNotFound, msg: fmt.Sprintf("no device group named %q in product %s", ref, prod.Name),
			hint: fmt.Sprintf("run 'moat device-group list --product %s' to see its groups", shellQuote(prod.Name))}
	}
	return p.Items[0], nil
}

// printJSON prints v as indented JSON.
func (s *session) printJSON(v any) error {
	enc := json.NewEncoder(s.env.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// show prints one object: as JSON, or as a two-column table of its fields.
func (s *session) show(v any, fields [][2]string) error {
	if s.json() {
		return s.printJSON(v)
	}
	tw := tabwriter.NewWriter(s.env.Stdout, 0, 4, 2, ' ', 0)
	for _, f := range fields {
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], clean(f[1]))
	}
	return tw.Flush()
}

// printList prints a list: as a JSON array of the API objects, or as a table.
func printList[T any](s *session, items []T, header []string, row func(T) []string) error {
	if s.json() {
		if items == nil {
			items = []T{}
		}
		return s.printJSON(items)
	}
	tw := tabwriter.NewWriter(s.env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, it := range items {
		cells := row(it)
		for i := range cells {
			cells[i] = clean(cells[i])
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// done prints a confirmation line of a table-mode command.
func (s *session) done(format string, args ...any) {
	if !s.json() {
		fmt.Fprintf(s.env.Stdout, format+"\n", args...)
	}
}

// note prints a diagnostic or a next step to stderr.
func (s *session) note(format string, args ...any) {
	fmt.Fprintf(s.env.Stderr, format+"\n", args...)
}

// clean makes a server-supplied string safe for one table cell: no control characters, so
// no terminal escapes and no broken columns.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return fmtTime(*t)
}

// shellQuote quotes s for a command the user may paste.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return r != '-' && r != '_' && r != '.' && r != '/' && !unicode.IsLetter(r) && !unicode.IsDigit(r)
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// checkName refuses an empty or padded name before any request; the server checks the rest.
func checkName(flagName, v string) error {
	switch {
	case v == "":
		return usagef("--%s is required and must not be empty", flagName)
	case strings.TrimSpace(v) != v:
		return usagef("--%s must not start or end with white space", flagName)
	}
	return nil
}

// given reports whether the named flag was set on the command line.
func (s *session) given(name string) bool {
	found := false
	s.fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			found = true
		}
	})
	return found
}
