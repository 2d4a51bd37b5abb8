package mgmt

import (
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/updstate"
)

// createUpdateStates stores a device's batch of update states. The device is the one the
// client certificate names (c.device): the body has no device field (strict decoding
// refuses one), so a device can only report for itself (rule 3; attacked by
// TestUpdateStates_StoredUnderCertificateDevice). The batch was validated whole before
// this runs (an invalid report is a 400 naming it, and nothing is stored); the reports are
// stored in one transaction, each report ID once per device, so a device that lost an
// answer and sends the batch again gets the same answer and nothing twice.
//
// No audit event: a report is the device's telemetry, not a change someone made.
func (a *API) createUpdateStates(c *call) (any, error) {
	req := c.body.(updstate.Batch)
	out := updstate.Accepted{Accepted: make([]string, 0, len(req.Reports))}
	err := a.inTenant(c, func(tt store.TenantTx) error {
		out.Accepted = out.Accepted[:0] // a retried transaction starts over
		seen := make(map[string]bool, len(req.Reports))
		for _, r := range req.Reports {
			if seen[r.ID] {
				continue
			}
			seen[r.ID] = true
			if err := tt.UpdateEvents().Add(c.ctx, c.device.ID, r, c.now); err != nil {
				return err
			}
			out.Accepted = append(out.Accepted, r.ID)
		}
		return nil
	})
	if err != nil {
		return nil, storeProblem(err, "device", string(c.device.ID))
	}
	return out, nil
}

// listUpdateStates lists a device's update history for the tenant's staff; a device that
// is not the tenant's is 404 like an unknown one (rule 3).
func (a *API) listUpdateStates(c *call) (any, error) {
	id, err := a.deviceID(c)
	if err != nil {
		return nil, err
	}
	p, err := c.page()
	if err != nil {
		return nil, err
	}
	var items []updstate.Record
	err = a.readTenant(c, func(tt store.TenantTx) error {
		if _, err := tt.Devices().Get(c.ctx, id); err != nil {
			return err
		}
		items, err = tt.UpdateEvents().List(c.ctx, id, p)
		return err
	})
	if err != nil {
		return nil, storeProblem(err, "device", string(id))
	}
	return listOf(items, p, func(r updstate.Record) string { return r.Report.ID }), nil
}
