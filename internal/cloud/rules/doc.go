// Package rules is the manufacturer cloud's alerting: rules declared per product in a
// versioned YAML file, and an in-memory engine that judges device samples against them.
//
// # Rule files
//
// Parse reads a file and reports every problem as "file:line: message". A file declares
// its product, the metrics its rules read (name, UCUM unit, label) and up to MaxRules
// rules of four kinds:
//
//   - threshold: an expr-lang condition over one sample (when), with an optional
//     clearing condition (clear_when, the hysteresis; default: not when);
//   - rate: the change per minute of a metric between two consecutive samples of a
//     device, above or below limits;
//   - missing: no sample (or none carrying a metric) from a device seen before, for a
//     while;
//   - fleet: a device's mean of a metric over one cycle phase, judged by a robust z-score
//     against the same product's fleet: z = (x - median) / max(1.4826 * MAD, min_spread)
//     over the devices' latest means within a window. The median moves with the fleet,
//     so a hot summer that warms every device fires nothing, while one failing part does.
//
// A file may also declare its product's settings: warranty (a whole number and d, w or
// y, a year counting 365 days), consumables (name: {buy_url}) and parts (part number:
// {description}). The actions reserve-part and prompt name a part or a consumable; since
// the declarations may come anywhere in the file, Parse checks those names in a second
// pass, after the whole file is read (checkDeclared).
//
// Conditions are compiled once, at Parse, against a typed environment (each declared
// metric a float64, phase and cycle strings). What they may hold is an allow list:
// literals, those names, arithmetic, comparisons, and/or/not, the ternary, "in" over a
// literal array, contains/startsWith/endsWith, and abs, ceil, floor, round, min, max.
// Nothing else: no other builtin (map, filter, reduce, repeat, now, fromJSON...), no
// "..", no matches, no let, no member access. So a condition cannot loop, call out,
// read the clock or allocate beyond its own size, and one evaluation is bounded by
// MaxExprNodes steps.
//
// # Engine
//
// An Engine keeps, per product, per device, a fixed-size state per rule and a ring of the
// last EvidenceSamples samples (the declared metrics only), and per fleet rule one mean
// per device. Devices per product are capped (MaxDevices; past it samples are dropped and
// counted), and each fleet distribution is capped (MaxFleetDevices: a bottom-k sample by
// hash of the device ID). A rule fires once per episode: it must hold for its sustained
// duration or count, then the alert stays open, and fires no more, until its clearing
// condition holds, which emits one Clear. Restore re-opens episodes the store holds after
// a restart so they do not fire again.
//
// The engine trusts its clock (EngineConfig.Now) and the caller's decoded samples; it
// does not trust device times: samples too far in the future or older than the device's
// last are dropped, and the missing-data rule measures silence by the engine's clock.
// It does no IO: no storage, no network; the caller stores transitions and runs actions.
// All methods are safe for concurrent use (one lock).
package rules
