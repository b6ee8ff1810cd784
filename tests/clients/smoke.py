"""Drives a live Roster through the Python client generated from openapi/openapi.json.

    python3 tests/clients/smoke.py BASE_URL EMAIL PASSWORD   (the generated package,
    roster_client, must be importable)

Exits non-zero on the first call that does not answer as the spec says.
"""

import sys

from roster_client import AuthenticatedClient, Client
from roster_client.api.auth import login, logout, refresh
from roster_client.api.dashboard import dashboard_stats
from roster_client.api.users import (
    create_user,
    delete_user,
    export_users,
    get_me,
    get_user,
    list_users,
    update_user,
)
from roster_client.models import (
    DashboardStatsOut,
    ErrorBody,
    LoginRequest,
    RefreshRequest,
    TokenResponse,
    User,
    UserCreate,
    UserPage,
    UserUpdate,
)
from roster_client.models.export_users_format import ExportUsersFormat
from roster_client.models.list_users_sort import ListUsersSort


def expect(response, status, model):
    if response.status_code != status or not isinstance(response.parsed, model):
        sys.exit(
            f"expected {status} {model.__name__}, got {response.status_code}: {response.content[:300]!r}"
        )
    return response.parsed


def expect_error(response, status, code):
    error = expect(response, status, ErrorBody)
    if error.error != code or not error.request_id:
        sys.exit(f"expected error {code}, got {error.to_dict()}")


def main(base, email, password):
    anonymous = Client(base_url=base, raise_on_unexpected_status=False)
    tokens = expect(
        login.sync_detailed(client=anonymous, body=LoginRequest(email=email, password=password)),
        200,
        TokenResponse,
    )
    admin = AuthenticatedClient(base_url=base, token=tokens.access_token)

    created = []
    for i in range(5):
        user = expect(
            create_user.sync_detailed(
                client=admin,
                body=UserCreate(
                    email=f"client{i}@example.com",
                    password="client-password-1",
                    full_name=f"Client {i}",
                ),
            ),
            201,
            User,
        )
        created.append(user)

    page = expect(
        list_users.sync_detailed(
            client=admin, search="client", is_active=True, sort=ListUsersSort("email"), size=2
        ),
        200,
        UserPage,
    )
    seen = [u.email for u in page.items]
    assert page.total == 5 and page.pages == 3, page.to_dict()
    while page.next_cursor:
        page = expect(
            list_users.sync_detailed(
                client=admin,
                search="client",
                is_active=True,
                sort=ListUsersSort("email"),
                size=2,
                cursor=page.next_cursor,
            ),
            200,
            UserPage,
        )
        seen += [u.email for u in page.items]
    assert seen == sorted(u.email for u in created), seen

    exported = export_users.sync_detailed(
        client=admin, format_=ExportUsersFormat.NDJSON, search="client"
    )
    assert exported.status_code == 200, exported.status_code
    assert len(exported.content.splitlines()) == 5, exported.content

    one = expect(get_user.sync_detailed(created[0].id, client=admin), 200, User)
    assert one.email == "client0@example.com"
    changed = expect(
        update_user.sync_detailed(created[0].id, client=admin, body=UserUpdate(full_name="Renamed")),
        200,
        User,
    )
    assert changed.full_name == "Renamed"
    stats = expect(dashboard_stats.sync_detailed(client=admin), 200, DashboardStatsOut)
    assert stats.total_users >= 6

    # One error of each family, parsed into the error model.
    expect_error(get_me.sync_detailed(client=AuthenticatedClient(base_url=base, token="nope")), 401, "unauthorized")
    plain = expect(
        login.sync_detailed(
            client=anonymous,
            body=LoginRequest(email="client1@example.com", password="client-password-1"),
        ),
        200,
        TokenResponse,
    )
    as_plain = AuthenticatedClient(base_url=base, token=plain.access_token)
    expect_error(dashboard_stats.sync_detailed(client=as_plain), 403, "forbidden")
    expect_error(get_user.sync_detailed(999_999, client=admin), 404, "not_found")
    expect_error(
        create_user.sync_detailed(
            client=admin, body=UserCreate(email="client0@example.com", password="client-password-1")
        ),
        409,
        "email_taken",
    )
    expect_error(
        create_user.sync_detailed(client=admin, body=UserCreate(email="not-an-email", password="x")),
        422,
        "validation_error",
    )
    deleted = delete_user.sync_detailed(created[4].id, client=admin)
    assert deleted.status_code == 204, deleted.status_code

    renewed = expect(
        refresh.sync_detailed(client=anonymous, body=RefreshRequest(refresh_token=tokens.refresh_token)),
        200,
        TokenResponse,
    )
    out = logout.sync_detailed(client=anonymous, body=RefreshRequest(refresh_token=renewed.refresh_token))
    assert out.status_code == 204, out.status_code
    expect_error(
        refresh.sync_detailed(client=anonymous, body=RefreshRequest(refresh_token=renewed.refresh_token)),
        401,
        "unauthorized",
    )
    print("generated Python client: every call answered as the spec says")


if __name__ == "__main__":
    main(*sys.argv[1:4])
