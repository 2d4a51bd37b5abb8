package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/testenv"
)

// result is what one in-process run of the CLI produced.
type result struct {
	code           int
	stdout, stderr string
}

// user is one CLI user: its own configuration directory and environment.
type user struct {
	t    *testing.T
	env  Env
	vars map[string]string
}

func newUser(t *testing.T) *user {
	t.Helper()
	u := &user{t: t, vars: map[string]string{}}
	u.env = Env{ConfigDir: filepath.Join(t.TempDir(), "moat"), Getenv: func(k string) string { return u.vars[k] }}
	return u
}

// run runs the CLI with stdin and args.
func (u *user) runIn(stdin string, args ...string) result {
	u.t.Helper()
	var out, errb bytes.Buffer
	env := u.env
	env.Stdin, env.Stdout, env.Stderr = strings.NewReader(stdin), &out, &errb
	code := Main(u.t.Context(), args, env)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

func (u *user) run(args ...string) result {
	u.t.Helper()
	return u.runIn("", args...)
}

// must runs the CLI and fails the test unless it exits 0; it returns stdout.
func (u *user) must(args ...string) string {
	u.t.Helper()
	r := u.run(args...)
	if r.code != 0 {
		u.t.Fatalf("moat %s = exit %d, want 0\nstderr:\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// want runs the CLI and fails the test unless it exits with code.
func (u *user) want(code int, args ...string) result {
	u.t.Helper()
	r := u.run(args...)
	if r.code != code {
		u.t.Errorf("moat %s = exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	return r
}

// mustJSON runs the CLI with -o json and decodes its output into v.
func mustJSON[T any](u *user, args ...string) T {
	u.t.Helper()
	out := u.must(append(args, "-o", "json")...)
	var v T
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		u.t.Fatalf("moat %s -o json: output does not decode as %T: %v\n%s", strings.Join(args, " "), v, err, out)
	}
	return v
}

func caFile(t *testing.T, s *testenv.Server) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, s.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// login logs u in to s with token, read from standard input.
func (u *user) login(s *testenv.Server, token string) {
	u.t.Helper()
	r := u.runIn(token+"\n", "login", "--server", s.URL, "--ca-cert", caFile(u.t, s), "--token", "-")
	if r.code != 0 {
		u.t.Fatalf("moat login = exit %d, want 0\nstderr:\n%s", r.code, r.stderr)
	}
}

func TestLogin_WritesPrivateConfig(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	u := newUser(t)
	me := func() client.Me {
		r := u.runIn(s.OperatorToken, "login", "--server", s.URL, "--ca-cert", caFile(t, s), "--token", "-", "-o", "json")
		if r.code != 0 {
			t.Fatalf("moat login = exit %d\n%s", r.code, r.stderr)
		}
		var me client.Me
		if err := json.Unmarshal([]byte(r.stdout), &me); err != nil {
			t.Fatalf("moat login -o json: %v\n%s", err, r.stdout)
		}
		return me
	}()
	if !me.User.PlatformOperator {
		t.Errorf("moat login -o json = %+v, want the platform operator", me)
	}

	path := filepath.Join(u.env.ConfigDir, "config.json")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat config: %v", err)
	}
	if got := st.Mode().Perm(); got != 0o600 {
		t.Errorf("config.json mode = %v, want 0600", got)
	}
	dst, err := os.Stat(u.env.ConfigDir)
	if err != nil {
		t.Fatal(err)
	}
	if got := dst.Mode().Perm(); got != 0o700 {
		t.Errorf("config directory mode = %v, want 0700", got)
	}
	cfg, err := loadConfig(&u.env)
	if err != nil {
		t.Fatalf("loadConfig = %v", err)
	}
	want := loginConfig{Version: 1, Server: s.URL, Token: s.OperatorToken, CACertPEM: string(s.CAPEM)}
	if diff := cmp.Diff(want, *cfg); diff != "" {
		t.Errorf("config.json (-want +got):\n%s", diff)
	}

	// The stored login works for later commands.
	if out := u.must("token", "list"); !strings.Contains(out, me.TokenID) {
		t.Errorf("moat token list = %q, want it to list %s", out, me.TokenID)
	}
	u.must("logout")
	u.want(ExitUnauthenticated, "token", "list")
}

func TestLogin_RefusesBadToken(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	wrong := "moat_tok_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	for _, tok := range []string{wrong, "not-a-token"} {
		u := newUser(t)
		r := u.runIn(tok, "login", "--server", s.URL, "--ca-cert", caFile(t, s), "--token", "-")
		if r.code != ExitUnauthenticated {
			t.Errorf("moat login with token %q = exit %d, want %d\n%s", tok, r.code, ExitUnauthenticated, r.stderr)
		}
		if !strings.Contains(r.stderr, "moat login") {
			t.Errorf("moat login with a bad token: stderr = %q, want a hint to log in", r.stderr)
		}
		if _, err := os.Stat(filepath.Join(u.env.ConfigDir, "config.json")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("moat login with a bad token wrote config.json (stat: %v)", err)
		}
	}
}

func TestLogin_TokenFromEnvironment(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	u := newUser(t)
	u.vars["MOAT_TOKEN"] = s.OperatorToken
	u.must("login", "--server", s.URL, "--ca-cert", caFile(t, s))
	u.must("tenant", "list")
}

func TestLogin_UntrustedServerFails(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	other := testenv.StartServer(t)
	u := newUser(t)
	// Pinning another server's CA must fail the TLS handshake, not log in.
	r := u.runIn(s.OperatorToken, "login", "--server", s.URL, "--ca-cert", caFile(t, other), "--token", "-")
	if r.code != ExitError {
		t.Errorf("moat login with the wrong CA = exit %d, want %d\n%s", r.code, ExitError, r.stderr)
	}
	if !strings.Contains(r.stderr, "--ca-cert") {
		t.Errorf("moat login with the wrong CA: stderr = %q, want a hint about --ca-cert", r.stderr)
	}
}

// defaultGroup is what a default device group looks like in 'device-group list'.
type defaultGroup struct {
	Name   string
	Feed   client.OSFeed
	Policy client.UpdatePolicy
}

func TestFlow_OperatorToDeviceGroups(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	op := newUser(t)
	op.login(s, s.OperatorToken)

	tnt := mustJSON[client.Tenant](op, "tenant", "create", "--name", "Contoso")
	if tnt.Name != "Contoso" || tnt.ID == "" {
		t.Fatalf("tenant create = %+v", tnt)
	}
	op.must("tenant", "select", "Contoso")
	if cfg, _ := loadConfig(&op.env); cfg == nil || cfg.Tenant != tnt.ID {
		t.Fatalf("after tenant select, config tenant = %+v, want %s", cfg, tnt.ID)
	}
	if out := op.must("tenant", "show"); !strings.Contains(out, tnt.ID) {
		t.Errorf("tenant show = %q, want it to show %s", out, tnt.ID)
	}

	p := mustJSON[client.Product](op, "product", "create", "--name", "DW100", "--description", "Contoso dishwasher")
	if p.Name != "DW100" || p.Description != "Contoso dishwasher" || p.TenantID != tnt.ID || p.Version != 1 {
		t.Errorf("product create = %+v", p)
	}

	groups := mustJSON[[]client.DeviceGroup](op, "device-group", "list", "--product", "DW100")
	var got []defaultGroup
	for _, g := range groups {
		got = append(got, defaultGroup{g.Name, g.OSFeed, g.UpdatePolicy})
	}
	want := []defaultGroup{
		{"Development", client.OSFeedRetail, client.UpdateOSOnly},
		{"Field Test", client.OSFeedRetail, client.UpdateAll},
		{"Production", client.OSFeedRetail, client.UpdateAll},
		{"Field Test OS Evaluation", client.OSFeedRetailEval, client.UpdateAll},
		{"Production OS Evaluation", client.OSFeedRetailEval, client.UpdateAll},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("device-group list --product DW100 (-want +got):\n%s", diff)
	}
	if out := op.must("device-group", "list", "--product", "DW100"); !strings.Contains(out, "Field Test OS Evaluation") || !strings.Contains(out, "UPDATE POLICY") {
		t.Errorf("device-group list table = %q, want a header and the default groups", out)
	}

	// Update reads the product and writes with If-Match; flags may follow the argument.
	p2 := mustJSON[client.Product](op, "product", "update", "DW100", "--description", "Contoso DW100 dishwasher")
	if p2.Version != 2 || p2.Description != "Contoso DW100 dishwasher" || p2.Name != "DW100" {
		t.Errorf("product update = %+v, want version 2 with the new description", p2)
	}
	op.want(ExitUsage, "product", "update", "DW100")

	g := mustJSON[client.DeviceGroup](op, "device-group", "create", "--product", "DW100", "--name", "Beta",
		"--os-feed", "Retail", "--update-policy", "UpdateAll", "--description", "beta testers")
	if g.Name != "Beta" || g.OSFeed != client.OSFeedRetail || g.UpdatePolicy != client.UpdateAll || g.ProductID != p.ID {
		t.Errorf("device-group create = %+v", g)
	}
	g2 := mustJSON[client.DeviceGroup](op, "device-group", "update", "DW100/Beta", "--os-feed", "RetailEval", "--update-policy", "UpdateOSOnly")
	if g2.OSFeed != client.OSFeedRetailEval || g2.UpdatePolicy != client.UpdateOSOnly || g2.Version != 2 || g2.Description != "beta testers" {
		t.Errorf("device-group update = %+v, want RetailEval, UpdateOSOnly, version 2", g2)
	}
	g3 := mustJSON[client.DeviceGroup](op, "device-group", "show", "--product", p.ID, g.ID)
	if diff := cmp.Diff(g2, g3); diff != "" {
		t.Errorf("device-group show by IDs differs from the update result (-update +show):\n%s", diff)
	}
	op.must("device-group", "delete", "--product", "DW100", "Beta")
	op.want(ExitNotFound, "device-group", "show", "DW100/Beta")
	op.want(ExitUsage, "device-group", "show", "Beta")

	events := mustJSON[[]client.AuditEvent](op, "audit", "list")
	var actions []string
	for _, e := range events {
		actions = append(actions, e.Action)
	}
	for _, a := range []string{"tenant.create", "product.create", "product.update", "device_group.create", "device_group.update", "device_group.delete"} {
		if !strings.Contains(strings.Join(actions, " "), a) {
			t.Errorf("audit list actions = %v, want %s among them", actions, a)
		}
	}

	op.must("product", "delete", "DW100")
	op.want(ExitNotFound, "product", "show", "DW100")
	op.want(ExitNotFound, "product", "show", p.ID)
	if out := op.must("product", "list", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("product list -o json after delete = %q, want []", out)
	}
}

// TestOutputJSON_IsTheAPIObject compares --output json with the server's own response.
func TestOutputJSON_IsTheAPIObject(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	op := newUser(t)
	op.login(s, s.OperatorToken)
	tnt := mustJSON[client.Tenant](op, "tenant", "create", "--name", "Contoso")
	p := mustJSON[client.Product](op, "product", "create", "--tenant", tnt.ID, "--name", "DW100", "--description", "a <dishwasher> & more")

	raw := func(path string) any {
		req, err := http.NewRequestWithContext(t.Context(), "GET", s.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+s.OperatorToken)
		resp, err := s.HTTPClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return v
	}
	parse := func(out string) any {
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("CLI output is not JSON: %v\n%s", err, out)
		}
		return v
	}
	base := "/api/v1/tenants/" + tnt.ID + "/products"
	tests := []struct {
		args []string
		want any
	}{
		{[]string{"product", "show", "DW100", "--tenant", "Contoso"}, raw(base + "/" + p.ID)},
		{[]string{"product", "list", "--tenant", tnt.ID}, raw(base).(map[string]any)["items"]},
		{[]string{"device-group", "list", "--tenant", tnt.ID, "--product", "DW100"}, raw(base + "/" + p.ID + "/device-groups").(map[string]any)["items"]},
		{[]string{"tenant", "show", "Contoso"}, raw("/api/v1/tenants/" + tnt.ID)},
	}
	for _, tt := range tests {
		got := parse(op.must(append(tt.args, "--output", "json")...))
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("moat %s --output json differs from the API (-api +cli):\n%s", strings.Join(tt.args, " "), diff)
		}
	}
}

func TestProductCreate_DuplicateNameExits7(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	op := newUser(t)
	op.login(s, s.OperatorToken)
	op.must("tenant", "create", "--name", "Contoso")
	op.must("tenant", "select", "Contoso")
	op.must("product", "create", "--name", "DW100")
	r := op.want(ExitConflict, "product", "create", "--name", "DW100")
	if !strings.Contains(r.stderr, "(field name)") {
		t.Errorf("duplicate product create: stderr = %q, want it to name the field", r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("duplicate product create: stdout = %q, want nothing", r.stdout)
	}
}

// TestReader_CannotWrite covers a member created by an Administrator: it logs in with the
// token shown once, may read but not write, and is locked out once the token is revoked.
func TestReader_CannotWrite(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	op := newUser(t)
	op.login(s, s.OperatorToken)
	op.must("tenant", "create", "--name", "Contoso")
	op.must("tenant", "select", "Contoso")
	op.must("product", "create", "--name", "DW100")
	mc := mustJSON[client.MemberCreated](op, "member", "create", "--name", "rita", "--role", "Reader")
	if mc.Member.Role != client.RoleReader || mc.Secret == "" {
		t.Fatalf("member create = %+v, want a Reader with a secret", mc)
	}
	members := mustJSON[[]client.Member](op, "member", "list")
	if len(members) != 2 {
		t.Errorf("member list = %+v, want the operator and rita", members)
	}

	reader := newUser(t)
	reader.login(s, mc.Secret) // one tenant role: selected at login
	r := reader.want(ExitForbidden, "product", "create", "--name", "DW200")
	if !strings.Contains(r.stderr, "hint:") {
		t.Errorf("forbidden product create: stderr = %q, want a hint", r.stderr)
	}
	if out := reader.must("product", "list"); !strings.Contains(out, "DW100") {
		t.Errorf("reader product list = %q, want DW100", out)
	}
	reader.want(ExitForbidden, "member", "list")

	// The Administrator promotes rita by name, then she may write.
	op.must("member", "update", "rita", "--role", "Contributor")
	reader.must("product", "create", "--name", "DW200")

	reader.must("token", "revoke", mc.Token.ID)
	reader.want(ExitUnauthenticated, "product", "list")
}

func TestUsageErrors_ExitBeforeAnyRequest(t *testing.T) {
	t.Parallel()
	// Not logged in: each of these must fail on the command line alone, with exit 2.
	u := newUser(t)
	tests := [][]string{
		{"product", "list", "--bogus"},
		{"frobnicate"},
		{"product", "frobnicate"},
		{"product"},
		{"product", "list", "--output", "yaml"},
		{"product", "list", "-o", "xml"},
		{"product", "create", "--name", ""},
		{"product", "create"},
		{"product", "show"},
		{"product", "show", "a", "b"},
		{"product", "update", "DW100"},
		{"product", "update", "DW100", "--name", ""},
		{"tenant", "create", "--name", " padded"},
		{"device-group", "create", "--product", "DW100", "--name", "Beta", "--os-feed", "Nightly", "--update-policy", "UpdateAll"},
		{"device-group", "create", "--product", "DW100", "--name", "Beta", "--os-feed", "Retail", "--update-policy", "Sometimes"},
		{"device-group", "create", "--name", "Beta", "--os-feed", "Retail", "--update-policy", "UpdateAll"},
		{"device-group", "list"},
		{"device-group", "show", "NoSlash"},
		{"device-group", "update", "DW100/Beta"},
		{"device-group", "update", "DW100/Beta", "--os-feed", "retail"},
		{"member", "create", "--name", "x", "--role", "Owner"},
		{"token", "create", "--name", "ci", "--expires-in", "30d"},
		{"login"},
		{"login", "--server", "https://127.0.0.1:1", "--token", "x", "--ca-cert", "a.pem", "--insecure-skip-verify"},
		{"login", "--server", "https://127.0.0.1:1"},
		{"login", "--server", "http://example.com", "--token", "x"},
	}
	for _, args := range tests {
		r := u.want(ExitUsage, args...)
		if strings.Contains(r.stderr, "not logged in") {
			t.Errorf("moat %s: stderr = %q; the usage error must come before the login check", strings.Join(args, " "), r.stderr)
		}
	}
	// Help is not an error, also when asked for after an argument.
	u.want(ExitOK, "product", "show", "DW100", "--help")
	u.want(ExitOK, "--help")
}

func TestNoTenantSelected_SaysWhatToDo(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	op := newUser(t)
	op.login(s, s.OperatorToken)
	op.must("tenant", "create", "--name", "Contoso")
	op.must("tenant", "create", "--name", "Fabrikam")
	// The operator became Administrator of two tenants; neither was selected.
	for _, args := range [][]string{{"product", "list"}, {"member", "list"}, {"audit", "list"}, {"tenant", "show"}} {
		r := op.want(ExitUsage, args...)
		if !strings.Contains(r.stderr, "moat tenant select") || !strings.Contains(r.stderr, "--tenant") {
			t.Errorf("moat %s without a tenant: stderr = %q, want the hint", strings.Join(args, " "), r.stderr)
		}
	}
	op.must("product", "list", "--tenant", "Fabrikam")
	op.want(ExitNotFound, "product", "list", "--tenant", "Nowhere")
}

func TestToken_CreateListRevoke(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	op := newUser(t)
	op.login(s, s.OperatorToken)
	tc := mustJSON[client.TokenCreated](op, "token", "create", "--name", "ci", "--expires-in", "720h")
	if tc.Secret == "" || tc.Token.ExpiresAt == nil || tc.Token.Name != "ci" {
		t.Fatalf("token create = %+v, want a secret and an expiry", tc)
	}
	if out := op.must("token", "create", "--name", "laptop"); !strings.Contains(out, "moat_") {
		t.Errorf("token create table = %q, want the secret shown once", out)
	}
	toks := mustJSON[[]client.Token](op, "token", "list")
	if len(toks) != 3 {
		t.Errorf("token list = %d tokens, want 3", len(toks))
	}
	revoked := mustJSON[client.Token](op, "token", "revoke", tc.Token.ID)
	if revoked.RevokedAt == nil {
		t.Errorf("token revoke = %+v, want revoked_at set", revoked)
	}
	op.want(ExitNotFound, "token", "revoke", "tok_00000000000000000000000000000000")

	ci := newUser(t)
	r := ci.runIn(tc.Secret, "login", "--server", s.URL, "--ca-cert", caFile(t, s), "--token", "-")
	if r.code != ExitUnauthenticated {
		t.Errorf("login with a revoked token = exit %d, want %d", r.code, ExitUnauthenticated)
	}
}

func TestMember_LastAdministratorConflict(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	op := newUser(t)
	op.login(s, s.OperatorToken)
	op.must("tenant", "create", "--name", "Contoso")
	op.must("tenant", "select", "Contoso")
	me := mustJSON[client.Me](op, "login", "--server", s.URL, "--ca-cert", caFile(t, s), "--token", s.OperatorToken)
	r := op.want(ExitConflict, "member", "update", me.User.ID, "--role", "Reader")
	if !strings.Contains(r.stderr, "hint:") {
		t.Errorf("demoting the last Administrator: stderr = %q, want a hint", r.stderr)
	}
	mc := mustJSON[client.MemberCreated](op, "member", "create", "--name", "bob", "--role", "Contributor")
	op.must("member", "delete", "bob")
	op.want(ExitNotFound, "member", "delete", "bob")
	op.want(ExitNotFound, "member", "delete", mc.Member.User.ID)
}
