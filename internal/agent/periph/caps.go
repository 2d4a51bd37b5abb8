package periph

import (
	"strconv"

	"github.com/moat-iot/moat/internal/image"
)

// capSet is the manifest's peripheral capabilities as sets. Enforces DESIGN rule 6 for
// peripherals; attacked by TestServer_RefusesUndeclaredPeripherals.
type capSet struct {
	gpio, adc      map[int]bool
	uart, i2c, pwm map[string]bool
	deferUpdates   bool
}

func newCapSet(c image.Capabilities) capSet {
	return capSet{
		gpio: setOf(c.GPIO),
		adc:  setOf(c.ADC),
		uart: setOf(c.UART),
		i2c:  setOf(c.I2CMaster),
		pwm:  setOf(c.PWM),

		deferUpdates: c.SoftwareUpdateDeferral,
	}
}

func setOf[T comparable](xs []T) map[T]bool {
	m := make(map[T]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

// need returns the capability an op on r needs, spelled as in the manifest ("gpio:4",
// "adc:0", "uart:ISU0", "i2c_master:ISU1", "pwm:PWM-CONTROLLER-0"), and whether it is
// declared. Ops that use no peripheral need nothing.
func (c capSet) need(r *request) (string, bool) {
	switch r.Op {
	case OpGPIOSet, OpGPIOGet:
		return "gpio:" + strconv.Itoa(r.Pin), c.gpio[r.Pin]
	case OpADCRead:
		return "adc:" + strconv.Itoa(r.Channel), c.adc[r.Channel]
	case OpUARTWrite, OpUARTRead:
		return "uart:" + printable(r.UART), c.uart[r.UART]
	case OpI2CTransfer:
		return "i2c_master:" + printable(r.Bus), c.i2c[r.Bus]
	case OpPWMSet:
		return "pwm:" + printable(r.PWM), c.pwm[r.PWM]
	case OpUpdateDefer:
		// Allowing updates (update.allow) needs nothing: it only ends a deferral.
		// Attacked by TestServer_RefusesDeferralWithoutCapability.
		return "software_update_deferral", c.deferUpdates
	}
	return "", true
}

// printable cuts a name from the app to 64 bytes and replaces bytes outside printable ASCII
// with '?', so that what goes into logs and error reports is short and plain.
func printable(s string) string {
	b := []byte(truncate(s, 64))
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}
