package periph

import (
	"context"
	"errors"
)

// Backend is the hardware behind the local API. The server calls it only for peripherals
// the manifest declares, with arguments already range-checked, and never concurrently for
// one connection (several connections may call it at once). Errors wrapping ErrUnsupported
// become CodeUnsupported; any other error becomes CodeIOError with the error's text, which
// the app sees, so a backend puts no secrets in it.
type Backend interface {
	SetGPIO(ctx context.Context, pin int, high bool) error
	GPIO(ctx context.Context, pin int) (high bool, err error)
	ReadADC(ctx context.Context, channel int) (int64, error)
	WriteUART(ctx context.Context, name string, p []byte) (int, error)
	// ReadUART returns up to max bytes; it waits until at least one byte is there or ctx is
	// done, and then returns what it has (maybe nothing) without error.
	ReadUART(ctx context.Context, name string, max int) ([]byte, error)
	// TransferI2C writes w (if any) and then reads read bytes (if any) from the 7-bit
	// address addr, as one combined transaction.
	TransferI2C(ctx context.Context, bus string, addr int, w []byte, read int) ([]byte, error)
	SetPWM(ctx context.Context, name string, s PWMState) error
}

// PWMState is a PWM output's setting.
type PWMState struct {
	PeriodNS int64
	DutyNS   int64
	Enabled  bool
}

// Backend errors.
var (
	// ErrUnsupported: the backend has no peripherals of this kind (CodeUnsupported).
	ErrUnsupported = errors.New("not supported by this device")
	// ErrNotConnected: the peripheral is declared but nothing is wired to it (CodeIOError).
	ErrNotConnected = errors.New("not connected")
	// ErrInputPin: a write to a pin that is an input (CodeIOError).
	ErrInputPin = errors.New("pin is an input")
	// ErrNoDevice: no I2C device answered at the address (CodeIOError).
	ErrNoDevice = errors.New("no device at address")
)
