//go:build !linux

package periph

import (
	"context"
	"fmt"
)

// Off Linux there is no GPIO character device nor serial setup here.

// SetGPIO implements Backend: unsupported off Linux.
func (l *Linux) SetGPIO(context.Context, int, bool) error {
	return fmt.Errorf("gpio: %w", ErrUnsupported)
}

// GPIO implements Backend: unsupported off Linux.
func (l *Linux) GPIO(context.Context, int) (bool, error) {
	return false, fmt.Errorf("gpio: %w", ErrUnsupported)
}

// WriteUART implements Backend: unsupported off Linux.
func (l *Linux) WriteUART(context.Context, string, []byte) (int, error) {
	return 0, fmt.Errorf("uart: %w", ErrUnsupported)
}

// ReadUART implements Backend: unsupported off Linux.
func (l *Linux) ReadUART(context.Context, string, int) ([]byte, error) {
	return nil, fmt.Errorf("uart: %w", ErrUnsupported)
}

// TransferI2C implements Backend: unsupported off Linux.
func (l *Linux) TransferI2C(context.Context, string, int, []byte, int) ([]byte, error) {
	return nil, fmt.Errorf("i2c: %w", ErrUnsupported)
}
