-- Retention deletes finished diagnostics and cleared alerts by age (DeleteSummariesBefore).
CREATE INDEX diagnostics_finished ON diagnostics (finished_us) WHERE finished_us IS NOT NULL;
CREATE INDEX alerts_cleared ON alerts (cleared_us) WHERE state = 'cleared';
