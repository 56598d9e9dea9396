"""Typed application state (aiohttp AppKeys), shared by the app and its routes."""

from __future__ import annotations

import asyncpg
from aiohttp import web
from aiokafka import AIOKafkaProducer

from api.auth import KeyRing
from api.destinations import Destinations
from api.portal_sessions import PortalTokens
from api.ratelimit import RateLimiter
from api.tenant_view import TenantView
from api.tenants import Tenants
from pipeline.crypto import Sealer
from pipeline.settings import Settings
from pipeline.view import DestinationView

SETTINGS = web.AppKey("settings", Settings)
KEYRING = web.AppKey("keyring", KeyRing)
SEALER = web.AppKey("sealer", Sealer)
PRODUCER = web.AppKey("producer", AIOKafkaProducer)
VIEW = web.AppKey("view", DestinationView)
DB = web.AppKey("db", asyncpg.Pool)
DESTINATIONS = web.AppKey("destinations", Destinations)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
TENANT_VIEW = web.AppKey("tenant_view", TenantView)
TENANTS = web.AppKey("tenants", Tenants)
PORTAL_TOKENS = web.AppKey("portal_tokens", PortalTokens)
