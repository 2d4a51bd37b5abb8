package errreport_test

import (
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/errreport"
)

// TestValidate_RefusedMetadataNeedsNoTarget: a device that refuses its assignment or the
// repository's metadata (ATTACKS rows 9, 11 and 23) has chosen no image yet; its report is
// valid without a target at the verify step, and at no other step.
func TestValidate_RefusedMetadataNeedsNoTarget(t *testing.T) {
	t.Parallel()
	at := time.Now().UTC().Truncate(time.Second)
	for _, code := range []string{"assignment_refused", "stale_metadata"} {
		r := errreport.Report{ID: errreport.NewID(at), Kind: errreport.UpdateFailed, At: at, Step: errreport.StepVerify, Code: code,
			Message: "refresh image repository: timestamp.json is expired"}
		if err := r.Validate(); err != nil {
			t.Errorf("Validate(%s at the verify step, no target) = %v, want nil", code, err)
		}
	}
	for _, step := range []errreport.Step{errreport.StepDownload, errreport.StepInstall, errreport.StepBoot, errreport.StepHealth, errreport.StepAttest} {
		r := errreport.Report{ID: errreport.NewID(at), Kind: errreport.UpdateFailed, At: at, Step: step, Code: "x"}
		if err := r.Validate(); err == nil {
			t.Errorf("Validate(update_failed at %s without a target) = nil, want target_required", step)
		}
	}
}
