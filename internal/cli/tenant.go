package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

func newTenantCmd(env *Env) *ffcli.Command {
	return newNoun(env, "tenant", "Create, list and select tenants.",
		`A tenant is a manufacturer's account: every product, device group and audit event
belongs to exactly one, and nothing of one tenant is visible from another. Platform
operators create tenants; the commands that work inside a tenant use the one chosen with
'moat tenant select', or --tenant.

EXAMPLES
  moat tenant create --name Contoso
  moat tenant select Contoso
  moat tenant list
  moat tenant update Contoso --storage-quota 20GiB`,
		newTenantCreate(env), newTenantList(env), newTenantShow(env), newTenantUpdate(env), newTenantSelect(env), newSigningKeyCmd(env))
}

func tenantFields(t client.Tenant) [][2]string {
	quota := "server default"
	if t.StorageQuotaBytes != nil {
		quota = fmtBytes(*t.StorageQuotaBytes)
	}
	return [][2]string{{"ID", t.ID}, {"Name", t.Name}, {"Created", fmtTime(t.CreatedAt)}, {"Version", itoa(t.Version)}, {"Storage quota", quota}}
}

// storageFields shows what the tenant's uploads take against its quota.
func storageFields(st client.TenantStorage) [][2]string {
	quota := fmtBytes(st.QuotaBytes)
	if st.QuotaDefault {
		quota += " (server default)"
	}
	return [][2]string{{"Storage quota", quota}, {"Storage used", fmt.Sprintf("%s in %d image packages", fmtBytes(st.UsedBytes), st.Blobs)}}
}

func newTenantCreate(env *Env) *ffcli.Command {
	var name string
	return newVerb(env, "tenant", verb{
		name:  "create",
		short: "Create a tenant (platform operators only); you become its Administrator.",
		long: `Creates a tenant. The platform operator who creates it becomes its first Administrator
and can then add members with 'moat member create'.

EXAMPLES
  moat tenant create --name Contoso
  moat tenant create --name Contoso -o json`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&name, "name", "", "tenant `NAME` (required, unique)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if err := checkName("name", name); err != nil {
				return err
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			t, err := c.CreateTenant(ctx, client.TenantCreate{Name: name})
			if err != nil {
				return err
			}
			if err := s.show(t, tenantFields(t)); err != nil {
				return err
			}
			s.note("Next: moat tenant select %s", shellQuote(t.Name))
			return nil
		},
	})
}

func newTenantList(env *Env) *ffcli.Command {
	return newVerb(env, "tenant", verb{
		name:  "list",
		short: "List the tenants you can see.",
		long: `Lists the tenants in which you hold a role; a platform operator sees every tenant. The
selected tenant is marked with *.

EXAMPLES
  moat tenant list
  moat tenant list -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			items, err := client.Collect(ctx, client.ListOptions{}, c.ListTenants)
			if err != nil {
				return err
			}
			return printList(s, items, []string{"", "ID", "NAME", "CREATED"}, func(t client.Tenant) []string {
				mark := ""
				if t.ID == s.cfg.Tenant {
					mark = "*"
				}
				return []string{mark, t.ID, t.Name, fmtTime(t.CreatedAt)}
			})
		},
	})
}

func newTenantShow(env *Env) *ffcli.Command {
	return newVerb(env, "tenant", verb{
		name:  "show",
		args:  "[ID|NAME]",
		short: "Show a tenant (by default the selected one).",
		long: `Shows a tenant given by ID or name, or the selected tenant when none is given.

EXAMPLES
  moat tenant show
  moat tenant show Contoso -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			if len(args) > 1 {
				return usagef("unexpected argument %q", args[1])
			}
			var t client.Tenant
			if len(args) == 1 {
				var err error
				if t, err = s.findTenant(ctx, args[0]); err != nil {
					return err
				}
			} else {
				c, id, err := s.inTenant(ctx)
				if err != nil {
					return err
				}
				if t, err = c.GetTenant(ctx, id); err != nil {
					return err
				}
			}
			fields := tenantFields(t)
			if !s.json() {
				// Members see the usage too; a platform operator outside the tenant sees the
				// quota only.
				c, err := s.client()
				if err != nil {
					return err
				}
				st, err := c.GetTenantStorage(ctx, t.ID)
				if pe, ok := errors.AsType[*client.Error](err); ok && pe.Status == 404 {
					err = nil
				} else if err == nil {
					fields = append(fields[:len(fields)-1], storageFields(st)...)
				}
				if err != nil {
					return err
				}
			}
			return s.show(t, fields)
		},
	})
}

func newTenantUpdate(env *Env) *ffcli.Command {
	var quota string
	return newVerb(env, "tenant", verb{
		name:  "update",
		args:  "[ID|NAME]",
		short: "Change a tenant's storage quota (platform operators only).",
		long: `Sets the storage quota of a tenant given by ID or name (by default the selected one): the
most its uploaded image packages may take together, each distinct package counted once.
An upload that would exceed it is refused (storage_quota_exceeded); lowering the quota
below what is stored removes nothing. Sizes take a unit: B, KiB, MiB, GiB, TiB (or KB,
MB, GB, TB); 0 refuses every upload. Tenants without a quota of their own have the
server's default.

EXAMPLES
  moat tenant update Contoso --storage-quota 20GiB
  moat tenant update tnt_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f --storage-quota 500MiB -o json`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&quota, "storage-quota", "", "the tenant's storage quota, a `SIZE` such as 20GiB (required)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if len(args) > 1 {
				return usagef("unexpected argument %q", args[1])
			}
			if quota == "" {
				return usagef("--storage-quota SIZE is required")
			}
			n, err := parseBytes(quota)
			if err != nil {
				return usagef("--storage-quota: %v", err)
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			id := s.cfg.Tenant
			if len(args) == 1 {
				t, err := s.findTenant(ctx, args[0])
				if err != nil {
					return err
				}
				id = t.ID
			}
			if id == "" {
				return usagef("name the tenant, or select one with 'moat tenant select'")
			}
			st, err := c.PutTenantStorageQuota(ctx, id, client.TenantStorageQuota{StorageQuotaBytes: &n})
			if err != nil {
				return err
			}
			return s.show(st, append([][2]string{{"Tenant", st.TenantID}}, storageFields(st)...))
		},
	})
}

// byteUnits are the units parseBytes takes, longest first.
var byteUnits = []struct {
	suffix string
	n      int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

// parseBytes parses a size such as "20GiB", "500MB" or "1048576B" (a bare number is bytes).
func parseBytes(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.n
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size such as 20GiB", s)
	}
	return n * mult, nil
}

// fmtBytes writes a size in the largest binary unit it reaches, to a tenth.
func fmtBytes(n int64) string {
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.n {
			return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(n)/float64(u.n)), ".0") + " " + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + " B"
}

func newTenantSelect(env *Env) *ffcli.Command {
	return newVerb(env, "tenant", verb{
		name:  "select",
		args:  "ID|NAME",
		short: "Choose the tenant that later commands work in.",
		long: `Checks that you can see the tenant, then stores it in config.json as the current tenant.
Commands that work inside a tenant use it unless given --tenant.

EXAMPLES
  moat tenant select Contoso
  moat tenant select tnt_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "the tenant to select (ID or name)"); err != nil {
				return err
			}
			t, err := s.findTenant(ctx, args[0])
			if err != nil {
				return err
			}
			s.cfg.Tenant, s.cfg.TenantName = t.ID, t.Name
			if err := saveConfig(s.env, s.cfg); err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(t)
			}
			s.done("Selected tenant %s.", tenantLabel(t.ID, t.Name))
			return nil
		},
	})
}
