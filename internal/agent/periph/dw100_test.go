package periph

import (
	"context"
	"testing"
	"time"
)

func readADC(t *testing.T, b Backend, ch int) int64 {
	t.Helper()
	v, err := b.ReadADC(context.Background(), ch)
	if err != nil {
		t.Fatalf("ReadADC(%d) = %v", ch, err)
	}
	return v
}

func TestDW100_ThermalModel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name               string
		fault              HeaterFault
		heater             bool
		wantWater, wantDry int64
	}{
		{"heating", HeaterWorking, true, 200 + 10*dw100HeatWater, 200 + 10*dw100HeatDrying},
		{"off stays at room temperature", HeaterWorking, false, 200, 200},
		{"dead heater stays cool", HeaterDead, true, 200, 200},
		{"runaway heats while off", HeaterRunaway, false, 200 + 10*dw100HeatWater, 200 + 10*dw100HeatRunaway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := NewDW100()
			d.SetHeaterFault(tt.fault)
			if err := d.SetGPIO(context.Background(), DW100Heater, tt.heater); err != nil {
				t.Fatal(err)
			}
			for range 20 {
				d.Step(500 * time.Millisecond)
			}
			if w, dr := readADC(t, d, DW100WaterTemp), readADC(t, d, DW100DryingTemp); w != tt.wantWater || dr != tt.wantDry {
				t.Errorf("after 10 s: water %d, drying %d, want %d, %d", w, dr, tt.wantWater, tt.wantDry)
			}
		})
	}
}

func TestDW100_CapsAndCools(t *testing.T) {
	t.Parallel()
	d := NewDW100()
	_ = d.SetGPIO(context.Background(), DW100Heater, true)
	d.Step(time.Hour)
	if w, dr := readADC(t, d, DW100WaterTemp), readADC(t, d, DW100DryingTemp); w != dw100MaxWater || dr != dw100MaxDrying {
		t.Errorf("after an hour on: water %d, drying %d, want %d, %d", w, dr, dw100MaxWater, dw100MaxDrying)
	}
	_ = d.SetGPIO(context.Background(), DW100Heater, false)
	d.Step(time.Hour)
	if w := readADC(t, d, DW100WaterTemp); w != dw100Ambient {
		t.Errorf("after an hour off: water %d, want %d", w, dw100Ambient)
	}
	d.SetRinseAgent(3)
	if v := readADC(t, d, DW100RinseAgent); v != 3 {
		t.Errorf("rinse agent = %d, want 3", v)
	}
}
