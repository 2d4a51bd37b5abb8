package sqldb

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/moat-iot/moat/internal/product"
)

// encodeWindow is device_groups.maintenance_window: the window as JSON, NULL for none.
func encodeWindow(w *product.MaintenanceWindow) (sql.NullString, error) {
	if w == nil {
		return sql.NullString{}, nil
	}
	b, err := json.Marshal(w)
	if err != nil {
		return sql.NullString{}, fmt.Errorf("encode maintenance window: %w", err)
	}
	return sql.NullString{String: string(b), Valid: true}, nil
}

// decodeWindow reads a stored window strictly: a row that does not decode to a valid
// window is an error, never "any time" (fail closed).
func decodeWindow(s string) (*product.MaintenanceWindow, error) {
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	var w product.MaintenanceWindow
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("decode maintenance window: %w", err)
	}
	if err := w.Validate(); err != nil {
		return nil, fmt.Errorf("stored maintenance window: %w", err)
	}
	return &w, nil
}
