package postgres

// CheckReadOnly is the check of each connection of the read-only pool.
var CheckReadOnly = checkReadOnly
