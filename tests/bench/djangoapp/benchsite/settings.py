"""Settings of the minimal Django project that `make bench` serves.

It is Django's `startproject` middleware stack with DEBUG off and no
database: the one view touches neither the session nor the user, so no
query is ever made. It is kept here (not in examples/) so that the
benchmark stays the same while the examples change.
"""

DEBUG = False
SECRET_KEY = 'k9Vq2ZrT7mWb4NxLp8HsYc3DfGj6QaEu1RtKo5PiMnBv0XlJzS'  # bench only
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
