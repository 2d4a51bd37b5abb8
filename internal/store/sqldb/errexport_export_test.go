package sqldb

// ListTenantQuery is ListTenant's statement, for the query-plan test.
var ListTenantQuery = listTenantQuery
