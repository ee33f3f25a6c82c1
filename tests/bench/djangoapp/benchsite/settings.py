"""Settings of the minimal Django project that `make bench` serves.

It is Django's `startproject` middleware stack with DEBUG off and no
database: the one view touches neither the session nor the user, so no
query is ever made. It is kept here (not in examples/) so that the
benchmark stays the same while the examples change.
"""

DEBUG = False
# a fresh key per process: the benchmark's view uses no session or signed data,
# and no key is written in this (tracked) file
SECRET_KEY = __import__('secrets').token_urlsafe(50)
ALLOWED_HOSTS = ['127.0.0.1', 'localhost']
ROOT_URLCONF = 'benchsite.urls'
WSGI_APPLICATION = 'benchsite.wsgi.application'

INSTALLED_APPS = [
    'django.contrib.auth',
    'django.contrib.contenttypes',
    'django.contrib.sessions',
    'django.contrib.messages',
]

MIDDLEWARE = [
    'django.middleware.security.SecurityMiddleware',
    'django.contrib.sessions.middleware.SessionMiddleware',
    'django.middleware.common.CommonMiddleware',
    'django.middleware.csrf.CsrfViewMiddleware',
    'django.contrib.auth.middleware.AuthenticationMiddleware',
    'django.contrib.messages.middleware.MessageMiddleware',
    'django.middleware.clickjacking.XFrameOptionsMiddleware',
]

DATABASES = {}
USE_TZ = True
