// Compiled with `tsc --strict` against the types openapi-typescript generates from the
// committed spec (tests/clients/run.sh writes them to roster.ts beside this file).
import type { components, operations, paths } from "./roster";

type User = components["schemas"]["User"];
type ErrorBody = components["schemas"]["ErrorBody"];
type ListQuery = NonNullable<operations["list_users"]["parameters"]["query"]>;
type ListPage =
  paths["/api/v1/users"]["get"]["responses"][200]["content"]["application/json; charset=utf-8"];

const query: ListQuery = { search: "ada", sort: "-email", size: 20, is_active: true };
const user: User = {
  id: 1,
  email: "ada@example.com",
  full_name: null,
  is_active: true,
  is_superuser: false,
  email_verified: true,
  created_at: "2026-11-30T09:00:00Z",
  updated_at: "2026-11-30T09:00:00Z",
};
const page: ListPage = { items: [user], size: 20, next_cursor: null };
const error: ErrorBody = { error: "not_found", message: "User not found.", request_id: "x" };

export const checked = [query, page, error];
