package cli

import (
	"strings"
	"testing"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestTenantUpdate_StorageQuotaIsTheOperators: the platform operator sets a tenant's storage
// quota and tenant show reports it with the usage; a tenant's Administrator cannot.
func TestTenantUpdate_StorageQuotaIsTheOperators(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	op := newUser(t)
	op.login(s, s.OperatorToken)
	tnt := mustJSON[client.Tenant](op, "tenant", "create", "--name", "Contoso")
	op.must("tenant", "select", "Contoso")
	if out := op.must("tenant", "show"); !strings.Contains(out, "10 GiB (server default)") || !strings.Contains(out, "0 B in 0 image packages") {
		t.Errorf("tenant show = %q, want the default quota and nothing used", out)
	}
	st := mustJSON[client.TenantStorage](op, "tenant", "update", "Contoso", "--storage-quota", "20GiB")
	if st.QuotaBytes != 20<<30 || st.QuotaDefault || st.TenantID != tnt.ID {
		t.Errorf("tenant update --storage-quota 20GiB = %+v", st)
	}
	if out := op.must("tenant", "show"); !strings.Contains(out, "20 GiB") {
		t.Errorf("tenant show after the update = %q, want 20 GiB", out)
	}
	op.want(ExitUsage, "tenant", "update", "--storage-quota", "lots")
	op.want(ExitUsage, "tenant", "update")

	mc := mustJSON[client.MemberCreated](op, "member", "create", "--name", "ada", "--role", "Administrator")
	admin := newUser(t)
	admin.login(s, mc.Secret)
	admin.must("tenant", "select", "Contoso")
	admin.want(ExitForbidden, "tenant", "update", "--storage-quota", "1TiB")
	if got := mustJSON[client.Tenant](admin, "tenant", "show"); got.StorageQuotaBytes == nil || *got.StorageQuotaBytes != 20<<30 {
		t.Errorf("quota after the administrator's attempt = %v, want 20 GiB", got.StorageQuotaBytes)
	}
}

func TestParseBytes(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"0": 0, "512": 512, "1KiB": 1024, "20GiB": 20 << 30, "10 GB": 10e9, "3B": 3, "1TiB": 1 << 40} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5GiB", "GiB", "1PiB", "99999999999TiB"} {
		if got, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) = %d, want an error", in, got)
		}
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 20 << 30: "20 GiB"} {
		if got := fmtBytes(n); got != want {
			t.Errorf("fmtBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
