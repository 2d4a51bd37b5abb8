package rules

import (
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/telemetry"
)

// Version is the rule file version this package reads.
const Version = 1

// Limits of a rule file; Parse refuses anything larger.
const (
	// MaxFileBytes bounds a rule file.
	MaxFileBytes = 256 << 10
	// MaxRules bounds the rules of one file.
	MaxRules = 200
	// MaxMetrics bounds the metrics a file declares (a telemetry payload holds at most 32
	// readings).
	MaxMetrics = 32
	// MaxActions bounds the actions of one rule.
	MaxActions = 8
	// MaxExprBytes bounds one condition; MaxExprNodes bounds its syntax tree.
	MaxExprBytes = 1 << 10
	MaxExprNodes = 128
	// MaxSustainedCount bounds "N samples" and "N cycles".
	MaxSustainedCount = 1000
	// MaxDuration bounds every duration of a rule file (window, sustained, after,
	// clear_after).
	MaxDuration = 30 * 24 * time.Hour
)

// Kind is what a rule watches.
type Kind string

// The rule kinds.
const (
	// KindThreshold fires when an expression over one sample's readings holds.
	KindThreshold Kind = "threshold"
	// KindRate fires when a metric changes faster than a limit, per minute, between two
	// consecutive samples of a device.
	KindRate Kind = "rate"
	// KindMissing fires when a device that was seen sends nothing for a while.
	KindMissing Kind = "missing"
	// KindFleet fires when a device's cycle mean of a metric is unusual for the product's
	// fleet: a robust z-score against the fleet's median and MAD.
	KindFleet Kind = "fleet"
)

// Severity ranks an alert.
type Severity string

// The severities.
const (
	SeverityInfo     Severity = "info"
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

// Direction says which side of the fleet a fleet rule watches.
type Direction string

// The directions.
const (
	DirectionBoth  Direction = "both"
	DirectionAbove Direction = "above"
	DirectionBelow Direction = "below"
)

// File is a parsed, validated rule file: the rules of one product.
type File struct {
	// Name is the file name given to Parse, used in messages.
	Name    string
	Version int
	Product string
	// Metrics are the readings the rules may use, in file order.
	Metrics []Metric
	Rules   []*Rule
	// Settings are the product's warranty, consumables and parts (settings.go).
	Settings
}

// Metric declares a reading the rules use.
type Metric struct {
	Name string
	// Unit is the reading's unit in UCUM spelling ("Cel", "%"), as the device sends it.
	Unit string
	// Label names the metric in alert messages ("drying temperature").
	Label string
	Line  int
}

// Sustained is how long a condition must hold before a rule fires: a duration, or a number
// of consecutive samples (threshold, rate) or judged cycles (fleet). The zero value fires
// at once.
type Sustained struct {
	Duration time.Duration
	Count    int
}

func (s Sustained) String() string {
	switch {
	case s.Duration > 0:
		return s.Duration.String()
	case s.Count > 0:
		return fmt.Sprintf("%d in a row", s.Count)
	}
	return "0s"
}

// Action is what a firing rule asks the cloud to do: a registered name with one argument
// ({diagnostics: heater-self-test}).
type Action struct {
	Name string
	Arg  string
}

// Actions are the action names a caller accepts, each with a check of its argument. Parse
// refuses an action whose name is not a key, or whose argument the check refuses.
type Actions map[string]func(arg string) error

// Rule is one rule of a file. Fields that do not apply to its Kind are zero.
type Rule struct {
	Name        string
	Line        int
	Kind        Kind
	Severity    Severity
	Description string
	// Metric is the watched reading (rate, fleet, missing) or the reading whose value a
	// threshold alert reports.
	Metric string
	// Phase, when set, limits a fleet or rate rule to samples at that cycle phase.
	Phase string

	// When and ClearWhen are the threshold's expressions; ClearWhen empty means !When.
	When      string
	ClearWhen string

	// Above and Below are a rate rule's limits per minute (nil: none).
	Above, Below *float64
	// MaxGap is the longest gap between two samples that still makes a rate.
	MaxGap time.Duration

	// After is a missing rule's silence.
	After time.Duration

	// Window, MinDevices, Z, ClearZ, MinSpread and Direction shape a fleet rule.
	Window     time.Duration
	MinDevices int
	Z          float64
	ClearZ     float64
	MinSpread  float64
	Direction  Direction

	Sustained Sustained
	// ClearAfter, when set, clears an open alert whose condition has not been seen for
	// that long (a device that stopped sending while hot).
	ClearAfter time.Duration
	Actions    []Action

	when, clearWhen *condition
	// uses lists the metrics the threshold's expressions read: a sample lacking one is
	// not judged.
	uses []string
}

// CheckDiagnostics checks the argument of the diagnostics action: the command a device's
// app runs (telemetry.ValidCommand).
func CheckDiagnostics(arg string) error {
	if !telemetry.ValidCommand(arg) {
		return fmt.Errorf("command %q must be 1 to 64 letters, digits, '_', '.', '/' or '-'", arg)
	}
	return nil
}

// StandardActions are the actions moat cloud runs: diagnostics (the device runs the named
// diagnostics command), notify (mail the owner), service-request (open a request with
// the argument as its description), reserve-part (reserve a part declared under parts:
// at the owner's repair shop, under warranty) and prompt (prompt the owner to buy a
// consumable declared under consumables:). Callers add their own to the map. The checks
// of reserve-part and prompt see only the argument's syntax; Parse checks the
// declarations once the whole file is read.
func StandardActions() Actions {
	return Actions{
		ActionDiagnostics:    CheckDiagnostics,
		ActionNotify:         CheckNotify,
		ActionServiceRequest: CheckServiceRequest,
		ActionReservePart:    checkItem,
		ActionPrompt:         checkItem,
	}
}
