package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
)

// Fleet status (issue 11): device.Classify in SQL. The group's should-run target paths are
// bound as parameters, one group at a time, so the database selects and counts on the
// indexed columns of migrations 10 and 13 and never hands every device to the server.

// failedUpdates is device.FailedUpdateStates as an SQL list; the states are constants, so
// they are written into the statement rather than bound.
var failedUpdates = func() string {
	q := make([]string, len(device.FailedUpdateStates))
	for i, s := range device.FailedUpdateStates {
		q[i] = "'" + s + "'"
	}
	return "(" + strings.Join(q, ", ") + ")"
}()

// stateFilter returns the condition (" AND ...") that selects the devices of the groups in
// should whose fleet state is state, over args, which it appends to. Groups are taken in ID
// order, so one set of groups is always one statement (the statement cache keys on text).
func stateFilter(state string, should map[product.GroupID]device.Should, args []any) (string, []any, error) {
	if !slices.Contains(device.States, state) {
		// Fail closed: a misspelt state would otherwise select nothing, silently.
		return "", nil, fmt.Errorf("filter devices: unknown fleet state %q", state)
	}
	if len(should) == 0 {
		return "", nil, fmt.Errorf("filter devices: fleet state %q needs what each group should run", state)
	}
	bind := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	// The targets are bound only for the states that compare them: PostgreSQL refuses a
	// parameter the statement does not use (it cannot type it).
	compare := state == device.StateCurrent || state == device.StateFailed || state == device.StatePending
	var in, match []string
	for _, gid := range slices.Sorted(maps.Keys(should)) {
		s := should[gid]
		g := bind(gid)
		in = append(in, g)
		if !compare {
			continue
		}
		m := "group_id = " + g
		if s.OSTarget != "" {
			m += " AND running_os_target = " + bind(s.OSTarget)
		}
		if s.AppTarget != "" {
			m += " AND running_app_target = " + bind(s.AppTarget)
		}
		match = append(match, "("+m+")")
	}
	cond := " AND group_id IN (" + strings.Join(in, ", ") + ")"
	const ok = " AND attested_at IS NOT NULL AND refusal = ''"
	matches := "(" + strings.Join(match, " OR ") + ")"
	switch state {
	case device.StateNever:
		cond += " AND attested_at IS NULL"
	case device.StateRefused:
		cond += " AND refusal <> ''"
	case device.StateCurrent:
		cond += ok + " AND " + matches
	case device.StateFailed:
		cond += ok + " AND NOT " + matches + " AND update_state IN " + failedUpdates
	case device.StatePending:
		cond += ok + " AND NOT " + matches + " AND update_state NOT IN " + failedUpdates
	}
	return cond, args, nil
}

// statusGroup is CountStatus's grouping on PostgreSQL, in the order of its devices_status
// index (migration 17) after tenant_id and product_id: an index-only scan. It leaves out
// the versions (a target's last segment) and the product (bound): each column read per
// device costs, and the count must stay within a few times a bare count(*)
// (BenchmarkFleetStatus).
const statusGroup = `group_id, running_os_target, running_app_target, refusal, update_state`

// statusKey is the same grouping as one key, for SQLite, whose devices_status index holds
// exactly this expression (migration 17): grouping by one value per device costs SQLite
// about half what five columns do. The parts are joined by the unit separator, which no
// part holds (IDs, target paths and reasons are printable), so ordering by the key orders
// by the parts; the last part is 1 for a device that never attested.
const statusKey = `(group_id || char(31) || running_os_target || char(31) || running_app_target || char(31) || refusal || char(31) || update_state || char(31) || (attested_at IS NULL))`

// countStatusQuery is CountStatus's statement and arguments for the dialect.
func countStatusQuery(dialect string, tenant any, f device.Filter, n int) (string, []any, error) {
	if f.ProductID == "" {
		return "", nil, errors.New("count fleet status: a product is required")
	}
	cond, args, err := deviceFilter(f, tenant)
	if err != nil {
		return "", nil, err
	}
	args = append(args, limit(store.Page{Limit: n}))
	lim := ` LIMIT $` + strconv.Itoa(len(args))
	if dialect == "sqlite" {
		return `SELECT ` + statusKey + `, count(*) FROM devices WHERE tenant_id = $1` + cond +
			` GROUP BY ` + statusKey + ` ORDER BY ` + statusKey + lim, args, nil
	}
	return `SELECT ` + statusGroup + `, count(*), count(attested_at) FROM devices WHERE tenant_id = $1` + cond +
		` GROUP BY ` + statusGroup + ` ORDER BY ` + statusGroup + lim, args, nil
}

// version is the version of an image by its target path (kind/name/version).
func version(target string) string { return target[strings.LastIndexByte(target, '/')+1:] }

// scanStatusKey reads one row of SQLite's count.
func scanStatusKey(row interface{ Scan(...any) error }, c *store.StatusCount) error {
	var key string
	if err := row.Scan(&key, &c.Devices); err != nil {
		return err
	}
	parts := strings.Split(key, "\x1f")
	if len(parts) != 6 {
		return fmt.Errorf("count fleet status: malformed key %q", key)
	}
	r := &c.Running
	c.GroupID, r.OSTarget, r.AppTarget, c.Refusal, c.UpdateState = product.GroupID(parts[0]), parts[1], parts[2], parts[3], parts[4]
	if parts[5] == "0" {
		c.Attested = c.Devices
	}
	return nil
}

func (s tenantDevices) CountStatus(ctx context.Context, f device.Filter, n int) ([]store.StatusCount, error) {
	q, args, err := countStatusQuery(s.t.tx.d.Name, s.t.id, f, n)
	if err != nil {
		return nil, err
	}
	return queryList(ctx, s.t.tx, func(row interface{ Scan(...any) error }) (store.StatusCount, error) {
		c := store.StatusCount{ProductID: f.ProductID}
		var err error
		if s.t.tx.d.Name == "sqlite" {
			err = scanStatusKey(row, &c)
		} else {
			var gid string
			r := &c.Running
			err = row.Scan(&gid, &r.OSTarget, &r.AppTarget, &c.Refusal, &c.UpdateState, &c.Devices, &c.Attested)
			c.GroupID = product.GroupID(gid)
		}
		c.Running.OSVersion, c.Running.AppVersion = version(c.Running.OSTarget), version(c.Running.AppTarget)
		return c, err
	}, q, args...)
}

// withExtra scans a row's device columns with scanDevice and the columns that follow them
// into extra.
type withExtra struct {
	row   interface{ Scan(...any) error }
	extra []any
}

func (w withExtra) Scan(dest ...any) error { return w.row.Scan(append(dest, w.extra...)...) }

func (s tenantDevices) ListStatus(ctx context.Context, f device.Filter, p store.Page) ([]store.DeviceRow, error) {
	cond, args, err := deviceFilter(f, s.t.id, p.After)
	if err != nil {
		return nil, err
	}
	args = append(args, limit(p))
	q := `SELECT ` + deviceCols + `, running_os_target, running_os_version, running_app_target, running_app_version,
		update_state, update_state_at, last_seen_at
		FROM devices WHERE tenant_id = $1 AND id > $2` + cond + ` ORDER BY id LIMIT $` + strconv.Itoa(len(args))
	return queryList(ctx, s.t.tx, func(row interface{ Scan(...any) error }) (store.DeviceRow, error) {
		var r store.DeviceRow
		var updated, seen sql.NullTime
		rr := &r.Running
		d, err := scanDevice(withExtra{row, []any{&rr.OSTarget, &rr.OSVersion, &rr.AppTarget, &rr.AppVersion, &r.UpdateState, &updated, &seen}})
		r.Device, r.UpdateStateAt, r.LastSeenAt = d, timePtr(updated), timePtr(seen)
		return r, err
	}, q, args...)
}
