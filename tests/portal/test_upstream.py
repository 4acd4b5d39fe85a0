import httpx
import pytest

from loupe.portal import upstream


class Down(Exception):
    pass


async def test_any_answer_is_returned_whatever_its_status() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(503, text=request.method))
    async with httpx.AsyncClient(transport=transport) as client:
        response = await upstream.request(client, "POST", "http://x/y", Down, "x")
    assert response.status_code == 503 and response.text == "POST"


async def test_no_answer_is_the_upstreams_own_error_naming_it() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(
            Down, match=r"^the thing at http://x cannot be reached \(ConnectError\)$"
        ):
            await upstream.request(client, "GET", "http://x/y", Down, "the thing at http://x")
