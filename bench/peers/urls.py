"""The peers serve no HTTP."""

urlpatterns: list = []
